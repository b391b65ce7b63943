package PVEStack;

# Test helper: the real Proxmox Perl modules from ../shared/pve-stack (or $PVE_STACK_DIR),
# loaded with the stand-ins of perl/t/lib/standin, an API root with oxnotify's example class
# and pve-manager's real notification class, and a request path that follows pve-manager's
# PVE::HTTPServer::rest_handler step by step (find_handler, URI/body parameter merge,
# permission check with the real RPCEnvironment, protected -> forwarded when not root,
# handle with result verification, PVE::Exception -> status) and the standard JSON formatter.

use strict;
use warnings;

use Cwd ();
use Exporter 'import';
use File::Basename ();
use Test::More ();

our @EXPORT = qw(stack_dir load_stack pve_request pve_perl5lib);

my $ROOT = Cwd::abs_path(File::Basename::dirname(__FILE__) . '/../../..');

# Where the Proxmox sources are, or (undef, why not) when neither $PVE_STACK_DIR nor
# ../shared/pve-stack is there.
sub stack_dir {
    if (defined(my $d = $ENV{PVE_STACK_DIR})) {
        # asked for explicitly: a wrong directory is an error, not a reason to skip
        return -d "$d/pve-common/src/PVE" ? ($d) : die "PVE_STACK_DIR=$d has no pve-common/src/PVE\n";
    }
    my $d = "$ROOT/../shared/pve-stack";
    return -d "$d/pve-common/src/PVE" ? (Cwd::abs_path($d))
        : (undef, "no Proxmox Perl sources: set PVE_STACK_DIR or provide ../shared/pve-stack (see its README)");
}

# The directories a process needs in @INC / PERL5LIB (stand-ins first only for the three
# modules the stack does not contain; they are not in the stack dirs, so order is irrelevant).
sub lib_dirs {
    my ($stack) = @_;
    return ("$ROOT/perl/lib", "$ROOT/perl/examples", "$ROOT/perl/t/lib/standin",
        map { "$stack/$_" } qw(pve-common/src pve-access-control/src pve-http-server/src pve-manager));
}

sub pve_perl5lib { my ($stack) = @_; return join(':', lib_dirs($stack), $ENV{PERL5LIB} // ()) }

# Privileges the real pve-manager notification methods name in their permission checks.
sub _privs_of {
    my ($check, $out) = @_;
    return if ref($check) ne 'ARRAY';
    my ($op, @args) = @$check;
    if ($op eq 'perm') { $out->{$_} = 1 for @{ $args[1] } }
    else { _privs_of($_, $out) for @args }
}

my $loaded;

# Load everything; returns the RPC environment (type 'priv', as pvedaemon).
sub load_stack {
    my ($stack) = @_;
    return PVE::RPCEnvironment::get() if $loaded++;
    unshift @INC, lib_dirs($stack);
    require PVE::Exception;
    require PVE::RESTHandler;
    require PVE::RPCEnvironment;
    require PVE::APIServer::Formatter::Standard;
    require PVE::API2::Cluster::Notifications;    # the real one (with the PVE::Notify stand-in)
    require PVE::API2::OxNotify;                   # our example class
    require OxNotify::API2::Schema;

    my %privs;
    _privs_of($_->{permissions}{check}, \%privs) for @{ PVE::API2::Cluster::Notifications->method_attributes() };
    %PVE::AccessControl::KNOWN_PRIVS = %privs;

    # the stack's API root: our class as a subtree, pve-manager's class next to it
    eval q{
        package PVEStack::API2;
        use base 'PVE::RESTHandler';
        __PACKAGE__->register_method({ subclass => 'PVE::API2::OxNotify', path => 'oxnotify' });
        __PACKAGE__->register_method({ subclass => 'PVE::API2::Cluster::Notifications', path => 'cluster/notifications' });
        1;
    } or die $@;

    my $env = PVEStack::RPCEnvironment->init('priv');
    $env->init_request();    # real: cfs_update + user.cfg via the PVE::Cluster stand-in
    return $env;
}

# A request as pve-manager's rest_handler runs it, formatted by the standard 'json' formatter.
# Returns { status, body (decoded JSON), proxy (if forwarded), data (raw result) }.
sub pve_request {
    my ($user, $method, $uri, $params) = @_;
    $params = { %{ $params // {} } };
    my $rpcenv = PVE::RPCEnvironment::get();
    my $resp = { status => 501, message => "Method '$method $uri' not implemented" };
    my ($handler, $info);
    eval {
        my $uri_param = {};
        ($handler, $info) = PVEStack::API2->find_handler($method, $uri, $uri_param);
        return if !$handler || !$info;
        for my $p (sort keys %$params) {
            if (defined($uri_param->{$p}) && $uri_param->{$p} ne $params->{$p}) {
                PVE::Exception::raise_param_exc({ $p => 'duplicate parameter (already defined in URI) with conflicting values!' });
            }
            $uri_param->{$p} = $params->{$p};
        }
        $rpcenv->set_user($user);
        $rpcenv->check_api2_permissions($info->{permissions}, $user, $uri_param);
        if ($info->{protected} && $> != 0) {
            $resp = { proxy => 'localhost', proxy_params => $params };
            return;
        }
        # result verification on: every answer must match the declared returns schema
        $resp = { data => $handler->handle($info, $uri_param, 1), info => $info, status => 200 };
    };
    my $err = $@;
    $rpcenv->set_user(undef);
    if ($err) {
        $resp = { info => $info };
        if (ref($err) eq 'PVE::Exception') {
            $resp->{status} = $err->{code} || 500;
            $resp->{errors} = $err->{errors} if $err->{errors};
            $resp->{message} = $err->{msg};
        } else {
            $resp->{status} = 500;
            $resp->{message} = $err;
        }
    }
    return { status => 'proxy', proxy => $resp->{proxy} } if $resp->{proxy};
    my $data = $resp->{data};
    my $formatter = PVE::APIServer::Formatter::get_formatter('json', $method, $uri);
    my ($raw) = $formatter->($resp, $resp->{data}, $params, $uri, { userid => $user }, {});
    return { status => $resp->{status}, body => JSON::decode_json($raw), data => $data };
}

package PVEStack::RPCEnvironment;

# The real PVE::RPCEnvironment (check_api2_permissions, exec_api2_perm_check, check, check_any,
# root@pam handling); only permissions() answers from fixed privilege sets instead of the
# cluster's ACL tree: the standalone server's roles, so both paths grant the same.
use base 'PVE::RPCEnvironment';

our %USER_PRIVS = (
    'admin@pve' => 'admin',
    'audit@pve' => 'audit',
    'nobody@pve' => undef,
);

sub permissions {
    my ($self, $user, $path) = @_;
    my $role = $USER_PRIVS{$user};
    return {} if !defined $role;
    return { %{ $OxNotify::API2::Schema::ROLE_PRIVS{$role} } };
}

1;
