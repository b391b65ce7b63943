# oxnotify's API descriptors inside the real Proxmox Perl stack (../shared/pve-stack): registered
# into PVE::RESTHandler classes (our example class, and next to pve-manager's notification
# class), driven the way pve-manager's rest_handler does (real RPCEnvironment permission check,
# handle with result verification, PVE::Exception -> status, the standard JSON formatter); a
# PVE::CLIHandler command; mailto-user resolved by the stack; the daily job inside a
# pveupdate-like process keeping that process's syslog identity.
use strict;
use warnings;
use Test::More;
use POSIX ();
use lib 'perl/t/lib';
use IO::Socket::UNIX ();
use Socket ();
use PVEStack;

my ($STACK, $why) = stack_dir();
plan skip_all => $why if !$STACK;

use RigTest;
need_rig();
my $dir = setup_dirs();
load_stack($STACK);
my $r = rig();
my $api = '/oxnotify';
my %ours = map { $_->{name} => $_ } @{ PVE::API2::OxNotify->method_attributes() };

# --- registration, privileges, schemas -------------------------------------------------------
is(scalar(keys %ours), 12, 'all twelve methods registered in a PVE::RESTHandler class');
is_deeply([sort grep { !$ours{$_}{protected} } keys %ours], [], 'every method is protected (runs in the privileged daemon)');
ok(eval { PVE::RESTHandler::validate_method_schemas(); 1 }, 'verifyapi: every registered schema is valid') or diag $@;
my %pve = map { $_->{name} => $_ } @{ PVE::API2::Cluster::Notifications->method_attributes() };
for my $name (qw(get_smtp_endpoints get_smtp_endpoint create_smtp_endpoint update_smtp_endpoint delete_smtp_endpoint test_target)) {
    is_deeply($ours{$name}{permissions}{check}, $pve{$name}{permissions}{check}, "$name: same permission check as pve-manager");
    is($ours{$name}{path}, $pve{$name}{path}, "$name: same path as pve-manager");
}
is_deeply($ours{get_targets}{permissions}{check}, $pve{get_all_targets}{permissions}{check}, 'targets: same check as pve-manager');
for my $p (qw(name server port mode username password mailto mailto-user from-address author comment disable)) {
    ok($ours{update_smtp_endpoint}{parameters}{properties}{$p}, "update takes pve-manager's parameter '$p'");
}
is_deeply([sort grep { !$ours{get_smtp_endpoints}{returns}{items}{properties}{$_} }
    keys %{ $pve{get_smtp_endpoints}{returns}{items}{properties} }], [], 'list items declare every property pve-manager\'s do (origin too)');

# next to pve-manager's own notification methods, in the same class
ok(eval { OxNotify::API2::Notifications::register('PVE::API2::Cluster::Notifications', layout => 'beside-pve', errors => 'pve'); 1 },
    'beside-pve layout registers into pve-manager\'s class without collisions') or diag $@;
my ($h, $info) = PVEStack::API2->find_handler('GET', '/cluster/notifications/endpoints/smtp', {});
is($info->{code}, $pve{get_smtp_endpoints}{code}, 'pve-manager\'s endpoints/smtp still answers there');
($h, $info) = PVEStack::API2->find_handler('POST', '/cluster/notifications/endpoints/oxnotify-smtp/x1/test', {});
is($info && $info->{name}, 'test_oxnotify_smtp_endpoint', 'ours next to it: endpoints/oxnotify-smtp/{name}/test');
ok(!eval { OxNotify::API2::Notifications::register('PVE::API2::Cluster::Notifications'); 1 }, 'the own layout would collide there')
    && like($@, qr/duplicate method definition/, '... as RESTHandler says');

# --- statuses through the request path --------------------------------------------------------
my $sink = { server => '127.0.0.1', port => $r->{sink_port}, mode => 'insecure', 'from-address' => 'pve-test@example.test' };
my $res = pve_request('admin@pve', 'POST', "$api/endpoints/smtp", { %$sink, name => 'mu1', port => 70000, mailto => 'a@example.test' });
is($res->{status}, 400, 'bad port: 400');
ok($res->{body}{errors}{port}, '... with errors.port in the formatted answer');
$res = pve_request('admin@pve', 'POST', "$api/endpoints/smtp", { %$sink, name => 'mail.x', mailto => 'a@example.test' });
is_deeply([$res->{status}, [keys %{ $res->{body}{errors} }]], [400, ['name']], 'name outside pve-configid: 400 on name');
$res = pve_request('admin@pve', 'POST', "$api/endpoints/smtp", { %$sink, name => 'mu1', 'mailto-user' => 'not a user' });
ok($res->{status} == 400 && (grep { /^mailto-user/ } keys %{ $res->{body}{errors} }), 'mailto-user not user@realm: 400 on mailto-user');
$res = pve_request('admin@pve', 'POST', "$api/endpoints/smtp", { %$sink, name => 'mu1', author => "x\r\nBcc: y\@example.test", mailto => 'a@example.test' });
is($res->{status}, 400, 'CR/LF in a value (the core refuses it): 400, not 500');
is_deeply([keys %{ $res->{body}{errors} // {} }], ['author'], '... with the parameter the core named');
$res = pve_request('admin@pve', 'POST', "$api/endpoints/smtp", { %$sink, name => 'mu1', username => 'u', password => 'pw', mailto => 'a@example.test' });
ok($res->{status} == 400 && $res->{body}{message} =~ /allow-insecure-auth/, 'new target with auth over mode insecure: refused (400)');
$res = pve_request('audit@pve', 'POST', "$api/endpoints/smtp", { %$sink, name => 'mu1', mailto => 'a@example.test' });
is($res->{status}, 403, 'audit user creates: 403');
is(pve_request('nobody@pve', 'GET', "$api/endpoints/smtp")->{status}, 403, 'user without privileges lists: 403');
is(pve_request('admin@pve', 'GET', "$api/endpoints/smtp/nope")->{status}, 404, 'unknown target: 404');
is(pve_request('admin@pve', 'POST', "$api/targets/nope/test")->{status}, 404, 'test of an unknown target: 404');

# mailto-user: the stack's users, resolved by the example class's resolver (user.cfg)
my $alice = uniq('alice') . '@example.test';
$PVE::Cluster::USER_CFG = { users => { 'alice@pve' => { email => $alice }, 'bob@pve' => {} } };
$res = pve_request('admin@pve', 'POST', "$api/endpoints/smtp", { %$sink, name => 'mu1', 'mailto-user' => ['alice@pve', 'bob@pve'], comment => 'c' });
is($res->{status}, 200, 'create with mailto-user and no mailto: 200') or diag explain $res;
$res = pve_request('admin@pve', 'GET', "$api/endpoints/smtp/mu1");
is($res->{status}, 200, 'get: 200, the answer passed result verification');
is_deeply($res->{data}{'mailto-user'}, ['alice@pve', 'bob@pve'], '... with mailto-user');
my $digest = $res->{data}{digest};
$res = pve_request('admin@pve', 'GET', "$api/endpoints/smtp");
is($res->{status}, 200, 'list: 200, verified');
is($res->{data}[0]{origin}, 'user-created', '... items carry origin');
$res = pve_request('admin@pve', 'GET', "$api/targets");
is_deeply([$res->{status}, $res->{data}[0]{origin}, $res->{data}[0]{type}], [200, 'user-created', 'smtp'], 'targets: verified, with origin and type');

my $subject = "Test notification from oxnotify (target 'mu1')";
is(pve_request('admin@pve', 'POST', "$api/targets/mu1/test")->{status}, 200, 'test send with mailto-user: 200');
ok(find_mail($subject, qr/^To: .*\Q$alice\E/m), 'delivered to the address the stack resolved for alice@pve');
my $title = 'mailto-user send ' . uniq('s');
my $sent = OxNotify::Core::send({ targets => ['mu1'], title => $title, body => "x\n" });
ok($sent->[0]{ok}, 'OxNotify::Core::send to a mailto-user target') or diag explain $sent;
ok(find_mail($title, qr/^To: .*\Q$alice\E/m), '... delivered to alice\'s resolved address');
OxNotify::Core::set_user_email_resolver(undef);
$res = pve_request('admin@pve', 'POST', "$api/targets/mu1/test");
like($res->{body}{message} // '', qr/mailto-user is set in \S+notifications\.cfg line \d+/,
    'without a resolver: the message names the file and line of mailto-user');
ok($res->{status} == 400 && $res->{body}{message} =~ /no user e-mail resolver/ && $res->{body}{message} =~ /set_user_email_resolver/,
    'without a resolver: a clear 400 saying what the host must do') or diag explain $res;
OxNotify::Core::set_user_email_resolver(sub { $PVE::Cluster::USER_CFG->{users}{ $_[0] }{email} });

# updates: digest conflict, delete of every optional key
is(pve_request('admin@pve', 'PUT', "$api/endpoints/smtp/mu1", { comment => 'd', digest => $digest })->{status}, 200, 'update with the current digest: 200');
is(pve_request('admin@pve', 'PUT', "$api/endpoints/smtp/mu1", { comment => 'e', digest => $digest })->{status}, 409, 'stale digest: 409');
$res = pve_request('admin@pve', 'PUT', "$api/endpoints/smtp/mu1", { delete => 'mailto-user' });
ok($res->{status} == 400 && $res->{body}{message} =~ /recipient/, 'deleting the only recipients: 400');
is(pve_request('admin@pve', 'PUT', "$api/endpoints/smtp/mu1", { mailto => 'ops@example.test' })->{status}, 200, 'add mailto');
is(pve_request('admin@pve', 'PUT', "$api/endpoints/smtp/mu1", { delete => 'mailto-user,comment,port' })->{status}, 200,
    'delete as PVE clients send it (one comma list): 200');
$res = pve_request('admin@pve', 'GET', "$api/endpoints/smtp/mu1");
ok(!exists $res->{data}{'mailto-user'} && !exists $res->{data}{comment}, '... keys removed');
is(pve_request('admin@pve', 'PUT', "$api/endpoints/smtp/mu1", { delete => 'server' })->{status}, 400, 'delete of a required key: 400');

# OAuth2 methods: verified answers
my $ms = ms_target_params('ms1', 'pve-ms@example.test');
is(pve_request('admin@pve', 'POST', "$api/endpoints/smtp", $ms)->{status}, 200, 'create an OAuth2 target');
$res = pve_request('admin@pve', 'GET', "$api/targets/ms1/oauth2-status");
is_deeply([$res->{status}, $res->{data}{authorized}], [200, 0], 'oauth2-status: verified, 0/1 booleans');
$res = pve_request('admin@pve', 'POST', "$api/smtp-oauth2-authorize-url", { name => 'ms1', 'redirect-uri' => $RigTest::REDIRECT });
ok($res->{status} == 200 && $res->{data}{url} && $res->{data}{state}, 'authorize-url: verified');
my ($code, $state) = login_and_consent('pve-ms@example.test', $res->{data}{url});
$res = pve_request('admin@pve', 'POST', "$api/smtp-oauth2-token", { state => $state, 'authorization-code' => $code, target => 'ms1' });
is_deeply([$res->{status}, $res->{data}], [200, { target => 'ms1' }], 'code exchange through the PVE path: verified, no token in the answer');
$res = pve_request('admin@pve', 'GET', "$api/targets/ms1/oauth2-status");
is_deeply([$res->{status}, $res->{data}{authorized}], [200, 1], 'oauth2-status: authorized');
is(pve_request('admin@pve', 'POST', "$api/targets/ms1/test")->{status}, 200, 'test send over XOAUTH2 through the PVE path');
is(pve_request('admin@pve', 'POST', "$api/smtp-oauth2-token", { state => $state, 'authorization-code' => $code })->{status},
    400, 'replayed state: 400');
is(pve_request('audit@pve', 'POST', "$api/smtp-oauth2-authorize-url", { name => 'ms1', 'redirect-uri' => $RigTest::REDIRECT })->{status},
    403, 'audit user starts an authorization: 403');
$res = pve_request('admin@pve', 'POST', "$api/smtp-oauth2-token", { 'authorization-code' => 'c' });
ok($res->{status} == 400 && $res->{body}{errors}{'auth-method'}, 'token exchange without state or auth-method: 400 on auth-method');

# the beside-pve layout through pve-manager's class
$res = pve_request('admin@pve', 'GET', '/cluster/notifications/endpoints/oxnotify-smtp/mu1');
is_deeply([$res->{status}, $res->{data}{name}], [200, 'mu1'], 'beside-pve: GET endpoints/oxnotify-smtp/{name}');
is(pve_request('admin@pve', 'GET', '/cluster/notifications/endpoints/oxnotify-smtp/nope')->{status}, 404, 'beside-pve: 404');

# an existing section from before allow-insecure-auth: loads, sends, warns
{
    open(my $fh, '>>', "$ENV{OXNOTIFY_CONFIG_DIR}/notifications.cfg") or die;
    print $fh "\nsmtp: legacy\n\tserver 127.0.0.1\n\tport $r->{sink_port}\n\tmode insecure\n\tusername relay\n"
        . "\tfrom-address legacy\@example.test\n\tmailto ops\@example.test\n";
    close($fh);
    open($fh, '>>', "$ENV{OXNOTIFY_CONFIG_DIR}/priv/notifications.cfg") or die;
    print $fh "\nsmtp: legacy\n\tpassword relay-pw\n";
    close($fh);
}
$res = pve_request('admin@pve', 'GET', "$api/endpoints/smtp/legacy");
ok($res->{status} == 200 && $res->{data}{warning} =~ /clear text/, 'legacy insecure auth: loads, with a warning');
$res = pve_request('admin@pve', 'POST', "$api/targets/legacy/test");
unlike($res->{body}{message} // '', qr/allow-insecure-auth|notifications\.cfg/, 'legacy: sending is not refused by the config check');
like($res->{body}{message} // 'sent', qr/sent|SMTP authentication/, '... it reaches the server (the sink offers no AUTH)');
$res = pve_request('admin@pve', 'PUT', "$api/endpoints/smtp/legacy", { comment => 'x' });
ok($res->{status} == 400 && $res->{body}{message} =~ /allow-insecure-auth/, 'legacy: an update without allow-insecure-auth is refused');

# --- nothing runs as www-data: the unprivileged proxy forwards every method ----------------
{
    local $SIG{CHLD} = 'DEFAULT';
    my $pid = open(my $from_child, '-|') // die "fork: $!";
    if (!$pid) {
        $> = 33;    # www-data, as pveproxy
        my @bad;
        for my $m (@{ PVE::API2::OxNotify->method_attributes() }) {
            (my $path = $m->{path}) =~ s/\{name\}/mu1/;
            my $res = pve_request('admin@pve', $m->{method}, "$api/$path", {});
            push @bad, "$m->{method} $path: $res->{status}" if $res->{status} ne 'proxy';
        }
        print "$_\n" for @bad;
        exit 0;
    }
    my @bad = <$from_child>;
    close($from_child);
    is_deeply(\@bad, [], 'as www-data every method is forwarded to the privileged daemon, none runs');
}

# --- a PVE::CLIHandler command line over the methods --------------------------------------
SKIP: {
    skip 'PVE CLIs run as root', 4 if $> != 0;
    local $SIG{CHLD} = 'DEFAULT';
    local $ENV{PERL5LIB} = PVEStack::pve_perl5lib($STACK);
    my $cli = sub { my $a = join(' ', map { "'$_'" } @_); return `$^X -MPVE::CLI::oxnotify -e 'PVE::CLI::oxnotify->run_cli_handler()' $a 2>&1` };
    my $out = $cli->('show', 'ms1');
    is($? >> 8, 0, 'CLI show: exit 0') or diag $out;
    like($out, qr/$_/, "CLI show prints $_") for qw(auth-method from-address oauth2-client-id oauth2-tenant-id server mode digest);
    $out = $cli->('list', '--output-format', 'json');
    like($out, qr/"origin":"user-created"/, 'CLI list (json) includes origin');
    $out = $cli->('verifyapi');
    is($? >> 8, 0, 'CLI verifyapi: exit 0') or diag $out;
}

# --- the daily job inside a pveupdate-like process ----------------------------------------
sub pveupdate_like {
    my (%env) = @_;
    my $sock_path = "$dir/syslog.sock";
    unlink $sock_path;
    my $sock = IO::Socket::UNIX->new(Type => Socket::SOCK_DGRAM(), Local => $sock_path) or die "syslog socket: $!";
    local $SIG{CHLD} = 'DEFAULT';
    local $ENV{PERL5LIB} = PVEStack::pve_perl5lib($STACK);
    local @ENV{ keys %env } = values %env;
    local $ENV{TEST_SYSLOG} = $sock_path;
    my $rc = system($^X, '-e', <<'EOS');
use strict; use warnings;
use PVE::SafeSyslog;
use OxNotify::Daily;
initlog('pveupdate', 'daemon');                          # as pveupdate does
Sys::Syslog::setlogsock({ type => 'unix', path => $ENV{TEST_SYSLOG} });   # this test's socket
syslog('info', 'before oxnotify');
my $rc = OxNotify::Daily::run(logger => sub { my ($level, $msg) = @_; syslog($level, 'oxnotify: %s', $msg) });
syslog('info', "after oxnotify rc=$rc");
exit 0;
EOS
    is($rc, 0, 'pveupdate-like process ran');
    my @msgs;
    $sock->blocking(0);
    while (defined(my $m = do { my $buf; $sock->recv($buf, 65536); length($buf) ? $buf : undef })) { push @msgs, $m }
    return @msgs;
}
OxNotify::Core::create_target(ms_target_params('ms2', 'pve-ms2@example.test'));    # never authorized
my @msgs = pveupdate_like();
ok(@msgs >= 4, 'syslog lines received') or diag explain \@msgs;
is_deeply([grep { !/ pveupdate\[\d+\]: / } @msgs], [], 'every line keeps pveupdate\'s identity');
ok((grep { /oxnotify: WARNING target 'legacy': .*clear text/ } @msgs), 'the daily job warns about the legacy target') or diag explain \@msgs;
ok((grep { /^<30>.*oxnotify: target 'ms1': rotated, refresh token expires about \d{4}-/ } @msgs), 'the OAuth2 target: rotated (daemon.info)')
    or diag explain \@msgs;
ok((grep { /^<27>.*oxnotify: target 'ms2': needs-reauthorization .*not been authorized/ } @msgs), 'the unauthorized one: daemon.err')
    or diag explain \@msgs;
ok((grep { /after oxnotify rc=1/ } @msgs), 'exit code 1 (a target was not refreshed)');

# failing early (a config that cannot be read: a FIFO, which is refused rather than hanging)
# must not leave the caller's syslog changed either
my $broken = "$dir/broken";
mkdir $broken; mkdir "$broken/priv";
POSIX::mkfifo("$broken/notifications.cfg", 0600) or die "mkfifo: $!";
@msgs = pveupdate_like(OXNOTIFY_CONFIG_DIR => $broken);
is_deeply([grep { !/ pveupdate\[\d+\]: / } @msgs], [], 'early failure: every line keeps pveupdate\'s identity');
ok((grep { /after oxnotify rc=2/ } @msgs), 'early failure: exit code 2, and the caller logs on as itself') or diag explain \@msgs;

done_testing();
