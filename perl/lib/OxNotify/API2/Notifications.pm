package OxNotify::API2::Notifications;

use strict;
use warnings;

use OxNotify::Core;

our $VERSION = '0.1.0';

# Privilege checks in the format of PVE's RESTHandler ('perm', path, [privs]) / 'and' / 'or'.
my $AUDIT = ['perm', '/mapping/notifications', ['Mapping.Audit']];
my $MODIFY = ['perm', '/mapping/notifications', ['Mapping.Modify']];
my $USE = ['perm', '/mapping/notifications', ['Mapping.Use']];
# the token exchange makes the server talk to the network on the caller's behalf
my $TOKEN = ['and', $MODIFY, ['or', ['perm', '/', ['Sys.Audit', 'Sys.Modify']], ['perm', '/', ['Sys.AccessNetwork']]]];

my $NAME = {
    type => 'string', pattern => '^[A-Za-z][A-Za-z0-9._-]{0,63}$',
    description => 'Name of the notification target.',
};
my $DIGEST = {
    type => 'string', pattern => '^[0-9a-f]{64}$', optional => 1,
    description => 'Digest of the configuration as read; the change fails (409) if it was modified since.',
};

sub _s { my ($desc, %x) = @_; return { type => 'string', description => $desc, optional => 1, %x } }

# The SMTP target keys (see the README's configuration reference).
my %SMTP = (
    server => _s('SMTP server host name or IP address.', maxLength => 253),
    port => { type => 'integer', minimum => 1, maximum => 65535, optional => 1,
        description => 'Port (default 25/587/465 by mode).' },
    mode => _s('Connection security.', enum => [qw(insecure starttls tls)]),
    'auth-method' => _s('Authentication method.', enum => [qw(none plain google-oauth2 microsoft-oauth2 oauth2)]),
    username => _s('Login for plain; for OAuth2 the SASL identity if not the from-address.', maxLength => 256),
    'from-address' => _s('Sender address (the XOAUTH2 identity for OAuth2).', maxLength => 256),
    author => _s('Display name in the From header.', maxLength => 256),
    mailto => { type => 'array', items => { type => 'string', maxLength => 256 }, optional => 1,
        description => 'Recipient addresses.' },
    comment => _s('Comment.', maxLength => 4096),
    disable => { type => 'boolean', optional => 1, description => 'Disable the target.' },
    'allow-insecure-auth' => { type => 'boolean', optional => 1,
        description => 'Permit authentication without TLS (mode insecure).' },
    'oauth2-client-id' => _s('OAuth2 client (application) ID.', maxLength => 256),
    'oauth2-tenant-id' => _s('Microsoft Entra tenant (GUID or domain).', maxLength => 256),
    'oauth2-authorize-url' => _s('Authorize endpoint (generic provider, or override).', maxLength => 2048),
    'oauth2-token-url' => _s('Token endpoint (generic provider, or override).', maxLength => 2048),
    'oauth2-scope' => _s('Scopes (generic provider, or override).', maxLength => 1024),
    password => _s('Password for plain (stored in the private file, never returned).', maxLength => 1024),
    'oauth2-client-secret' => _s('OAuth2 client secret (private file, never returned).', maxLength => 1024),
    'oauth2-refresh-token' => _s('A refresh token obtained elsewhere (stored in the state, never returned; empty: keep).',
        maxLength => 16384),
);

my $TARGET = {
    type => 'object',
    properties => { name => { type => 'string' }, digest => { type => 'string' } },
    description => 'The target\'s public configuration (no secrets) and the config digest.',
};

our @METHODS = (
    {
        name => 'get_smtp_endpoints', path => 'endpoints/smtp', method => 'GET',
        permissions => { check => $AUDIT },
        description => 'List all SMTP notification targets (never returns secrets).',
        parameters => { additionalProperties => 0, properties => {} },
        returns => { type => 'array', items => $TARGET },
        code => sub { OxNotify::Core::list_targets() },
    },
    {
        name => 'create_smtp_endpoint', path => 'endpoints/smtp', method => 'POST', protected => 1,
        permissions => { check => $MODIFY },
        description => 'Create an SMTP notification target.',
        parameters => { additionalProperties => 0, properties => {
            name => $NAME, %SMTP,
            server => { %{ $SMTP{server} }, optional => 0 },
            'from-address' => { %{ $SMTP{'from-address'} }, optional => 0 },
            mailto => { %{ $SMTP{mailto} }, optional => 0 },
        } },
        returns => { type => 'null' },
        code => sub { OxNotify::Core::create_target($_[0]); return undef },
    },
    {
        name => 'get_smtp_endpoint', path => 'endpoints/smtp/{name}', method => 'GET',
        permissions => { check => $AUDIT },
        description => 'Read one SMTP target (never returns secrets). 404 if it does not exist.',
        parameters => { additionalProperties => 0, properties => { name => $NAME } },
        returns => $TARGET,
        code => sub { OxNotify::Core::get_target({ name => $_[0]{name} }) },
    },
    {
        name => 'update_smtp_endpoint', path => 'endpoints/smtp/{name}', method => 'PUT', protected => 1,
        permissions => { check => $MODIFY },
        description => 'Update an SMTP target. Empty secrets keep the stored ones; use delete to remove keys.',
        parameters => { additionalProperties => 0, properties => {
            name => $NAME, %SMTP, digest => $DIGEST,
            delete => { type => 'array', items => { type => 'string', enum => [sort(grep { $_ ne 'server' && $_ ne 'from-address' && $_ ne 'mailto' } keys %SMTP)] },
                optional => 1, description => 'Keys to remove.' },
        } },
        returns => { type => 'null' },
        code => sub { OxNotify::Core::update_target($_[0]); return undef },
    },
    {
        name => 'delete_smtp_endpoint', path => 'endpoints/smtp/{name}', method => 'DELETE', protected => 1,
        permissions => { check => $MODIFY },
        description => 'Remove an SMTP target with its secrets and OAuth2 state.',
        parameters => { additionalProperties => 0, properties => { name => $NAME, digest => $DIGEST } },
        returns => { type => 'null' },
        code => sub { OxNotify::Core::delete_target($_[0]); return undef },
    },
    {
        name => 'smtp_oauth2_authorize_url', path => 'smtp-oauth2-authorize-url', method => 'POST', protected => 1,
        permissions => { check => $TOKEN },
        description => 'Start authorizing an OAuth2 target: returns the provider URL with state and PKCE. '
            . 'The server keeps the PKCE verifier, bound to the state (single use, 10 minutes).',
        parameters => { additionalProperties => 0, properties => {
            name => $NAME,
            'redirect-uri' => { type => 'string', maxLength => 2048, description => 'Where the provider sends the browser back.' },
        } },
        returns => { type => 'object', properties => { url => { type => 'string' }, state => { type => 'string' } } },
        code => sub { OxNotify::Core::authorize_begin($_[0]) },
    },
    {
        name => 'smtp_oauth2_token', path => 'smtp-oauth2-token', method => 'POST', protected => 1,
        permissions => { check => $TOKEN },
        description => 'Exchange an authorization code on the backend. With state (from smtp-oauth2-authorize-url) '
            . 'the stored PKCE verifier and the target\'s registration are used and the result is stored in the target; '
            . 'without it (reference-compatible) the refresh token is returned.',
        parameters => { additionalProperties => 0, properties => {
            'authorization-code' => { type => 'string', maxLength => 8192, description => 'The code from the redirect.' },
            state => _s('The state from smtp-oauth2-authorize-url.', maxLength => 512),
            target => { %$NAME, optional => 1, description => 'Target the authorization is for.' },
            'auth-method' => _s('OAuth2 method (without state).', enum => [qw(google-oauth2 microsoft-oauth2 oauth2)]),
            'client-id' => _s('Client ID (without state).', maxLength => 256),
            'client-secret' => _s('Client secret (without state).', maxLength => 1024),
            'tenant-id' => _s('Microsoft tenant (without state).', maxLength => 256),
            'redirect-uri' => _s('Redirect URI of the authorize request (without state).', maxLength => 2048),
            'token-url' => _s('Token endpoint override (without state).', maxLength => 2048),
        } },
        returns => { type => 'object' },
        code => sub {
            my ($p) = @_;
            if (defined $p->{state}) {
                return OxNotify::Core::authorize_complete({ state => $p->{state},
                    'authorization-code' => $p->{'authorization-code'}, (defined $p->{target} ? (target => $p->{target}) : ()) });
            }
            for my $k ('auth-method', 'client-id', 'redirect-uri') {
                die OxNotify::Core::Error->new("parameter '$k' is required without 'state'", 400) if !defined $p->{$k};
            }
            return OxNotify::Core::exchange_smtp_oauth2_code({ %$p });
        },
    },
    {
        name => 'test_target', path => 'targets/{name}/test', method => 'POST', protected => 1,
        permissions => { check => $USE },
        description => 'Send a test notification through the target.',
        parameters => { additionalProperties => 0, properties => { name => $NAME } },
        returns => { type => 'null' },
        code => sub { OxNotify::Core::test_target({ name => $_[0]{name} }); return undef },
    },
    {
        name => 'oauth2_status', path => 'targets/{name}/oauth2-status', method => 'GET',
        permissions => { check => $AUDIT },
        description => 'OAuth2 health of a target: authorization, last refresh, token age, estimated expiry, '
            . 'last error, warning.',
        parameters => { additionalProperties => 0, properties => { name => $NAME } },
        returns => { type => 'object' },
        code => sub { OxNotify::Core::target_status({ name => $_[0]{name} }) },
    },
    {
        name => 'get_targets', path => 'targets', method => 'GET',
        permissions => { check => $AUDIT },
        description => 'All notification targets: name, type, disabled, comment.',
        parameters => { additionalProperties => 0, properties => {} },
        returns => { type => 'array' },
        code => sub {
            [ map { { name => $_->{name}, type => $_->{type}, disable => $_->{disable} ? 1 : 0,
                (defined $_->{comment} ? (comment => $_->{comment}) : ()), ($_->{error} ? (error => $_->{error}) : ()) } }
                @{ OxNotify::Core::list_targets() } ];
        },
    },
);

my %BY_NAME = map { $_->{name} => $_ } @METHODS;

# The descriptors, for stacks that register them (PVE: __PACKAGE__->register_method($_) for each).
sub methods { return @METHODS }

# One descriptor by name.
sub method {
    my ($name) = @_;
    return $BY_NAME{$name} // die OxNotify::Core::Error->new("no API method '$name'", 500);
}

1;

__END__

=head1 NAME

OxNotify::API2::Notifications - API method descriptors for oxnotify's notification targets

=head1 SYNOPSIS

    # a PVE-style stack
    package PVE::API2::Cluster::OxNotify;
    use base qw(PVE::RESTHandler);
    __PACKAGE__->register_method($_) for OxNotify::API2::Notifications::methods();

    # anything else
    my $m = OxNotify::API2::Notifications::method('get_smtp_endpoint');
    my $target = $m->{code}->({ name => 'm365' });

=head1 DESCRIPTION

Each method is data in the common RESTHandler format: C<name>, C<path>, C<method>,
C<protected>, C<permissions> (C<check> expressions: C<['perm', PATH, [PRIVS]]>, C<'and'>,
C<'or'>), C<description>, C<parameters> (JSON schema with C<optional>), C<returns>, and a short
C<code> closure that only passes the parameters to L<OxNotify::Core>. The caller validates the
parameters against the schema and checks the permissions first (L<OxNotify::API2::Schema> does
both for the standalone server and the CLI). Errors are L<OxNotify::Core::Error> exceptions
with an HTTP-style code.

Methods: C<GET/POST endpoints/smtp>, C<GET/PUT/DELETE endpoints/smtp/{name}>,
C<POST smtp-oauth2-authorize-url>, C<POST smtp-oauth2-token>, C<POST targets/{name}/test>,
C<GET targets/{name}/oauth2-status>, C<GET targets>.

=head1 FUNCTIONS

=over

=item methods() - all descriptors

=item method($name) - one descriptor

=back

=cut
