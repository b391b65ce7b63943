package OxNotify::API2::Schema;

use strict;
use warnings;

use JSON::Validator;
use Mojo::JSON ();
use OxNotify::Core::Error;

our $VERSION = '0.1.0';

# Privileges of the standalone server's roles (a PVE stack uses its own user/ACL system).
our %ROLE_PRIVS = (
    admin => { map { $_ => 1 } qw(Mapping.Audit Mapping.Modify Mapping.Use Sys.Audit Sys.Modify Sys.AccessNetwork) },
    audit => { map { $_ => 1 } qw(Mapping.Audit Sys.Audit) },
);

# Roles that only read: anything but a GET is refused for them, also where the descriptor's
# check (pve-manager's) lets Mapping.Audit through, as it does for sending a test (mail, and
# load on the SMTP server and the provider, without limit).
our %READ_ONLY = (audit => 1);

# RESTHandler parameters (properties with 'optional') -> a JSON schema.
sub json_schema {
    my ($params) = @_;
    my (%props, @required);
    for my $k (sort keys %{ $params->{properties} // {} }) {
        my %p = %{ $params->{properties}{$k} };
        push @required, $k if !delete $p{optional};
        delete @p{qw(description default)};
        if (($p{type} // '') eq 'boolean') {
            # PVE style: 0/1 (and true/false)
            %p = (anyOf => [{ type => 'boolean' }, { type => 'integer', enum => [0, 1] }]);
        }
        $props{$k} = \%p;
    }
    return { type => 'object', properties => \%props, required => \@required,
        additionalProperties => $params->{additionalProperties} ? Mojo::JSON::true() : Mojo::JSON::false() };
}

my %VALIDATORS;

# Validate $param (hashref) against the method's schema; dies with a 400 naming each failing
# parameter. Values from forms/query strings are coerced (numbers, lists). Booleans are what
# PVE's JSONSchema accepts: JSON true/false or 0/1 ("true"/"yes" as strings are refused there,
# so here too: the same input gets the same status on both paths).
# Lists given as one string (form fields, query strings, the CLI): "a@x, b@y" -> ['a@x', 'b@y'].
sub normalize {
    my ($method, $param) = @_;
    my $props = $method->{parameters}{properties} // {};
    for my $k (keys %$param) {
        my $schema = $props->{$k} or next;    # (no autovivification into the descriptor)
        next if ($schema->{type} // '') ne 'array' || ref($param->{$k});
        $param->{$k} = [grep { length } split(/[,;\s]+/, $param->{$k} // '')];
    }
    return $param;
}

sub validate {
    my ($method, $param) = @_;
    normalize($method, $param);
    my $jv = $VALIDATORS{ $method->{name} } //= do {
        my $v = JSON::Validator->new;
        $v->coerce('numbers,strings');
        $v->schema(json_schema($method->{parameters}));
        $v;
    };
    my @errors = $jv->validate($param);
    return if !@errors;
    my %by_param;
    for my $e (@errors) {
        my ($name) = $e->path =~ m{^/([^/]+)};
        if (!defined $name) {
            # unknown parameters are reported at the root: "Properties not allowed: a, b."
            my ($list) = $e->message =~ /^Properties not allowed: (.+)\.$/;
            $by_param{$_} //= 'unknown parameter' for split(/,\s*/, $list // 'parameters');
            next;
        }
        $by_param{$name} //= $e->message;
    }
    my $detail = join('; ', map { "$_: $by_param{$_}" } sort keys %by_param);
    my $err = OxNotify::Core::Error->new("parameter verification failed - $detail", 400);
    $err->{errors} = \%by_param;
    die $err;
}

# Evaluate a permission check expression for a role; returns 1 or a description of what is missing.
sub check_permissions {
    my ($check, $role) = @_;
    my $privs = $ROLE_PRIVS{$role} // {};
    my $eval;
    $eval = sub {
        my ($c) = @_;
        my ($op, @args) = @$c;
        if ($op eq 'perm') {
            my ($path, $need) = @args;
            my @missing = grep { !$privs->{$_} } @$need;
            return @missing ? (0, join('+', @$need) . " on $path") : (1);
        } elsif ($op eq 'and') {
            for my $sub (@args) { my ($ok, $why) = $eval->($sub); return (0, $why) if !$ok }
            return (1);
        } elsif ($op eq 'or') {
            my @why;
            for my $sub (@args) { my ($ok, $why) = $eval->($sub); return (1) if $ok; push @why, $why }
            return (0, join(' or ', @why));
        }
        return (0, "unknown permission check '$op'");
    };
    my ($ok, $why) = $eval->($check);
    return $ok ? 1 : $why;
}

# Check permissions, validate, run the method's code: what the server and the CLI both do.
sub call {
    my ($method, $param, $role) = @_;
    if (defined $role) {
        my $ok = check_permissions($method->{permissions}{check}, $role);
        die OxNotify::Core::Error->new("permission check failed: needs $ok", 403) if $ok ne '1';
        die OxNotify::Core::Error->new("permission check failed: the $role role may only read", 403)
            if $READ_ONLY{$role} && ($method->{method} // 'GET') ne 'GET';
    }
    validate($method, $param);
    # booleans arrive as JSON::PP::Boolean after coercion; the library wants plain JSON values
    return $method->{code}->($param);
}

1;

__END__

=head1 NAME

OxNotify::API2::Schema - parameter validation and permission checks for the API descriptors

=head1 DESCRIPTION

Turns the RESTHandler-style C<parameters> of L<OxNotify::API2::Notifications> into JSON
schemas and validates with L<JSON::Validator> (with coercion, so query/form strings work);
evaluates C<permissions-E<gt>{check}> expressions against the standalone server's roles
(C<admin>: everything; C<audit>: Mapping.Audit, Sys.Audit, and only GET methods: it may not
send a test either, which pve-manager's check would allow it).

=head1 FUNCTIONS

=over

=item json_schema($parameters)

=item normalize($method, \%param) - split list parameters given as one string

=item validate($method, \%param) - dies with a 400 L<OxNotify::Core::Error> whose C<errors>
maps each failing parameter to its message

=item check_permissions($check, $role) - 1, or a text saying which privilege is missing

=item call($method, \%param, $role) - check (if C<$role> is defined), validate, run

=back

=cut
