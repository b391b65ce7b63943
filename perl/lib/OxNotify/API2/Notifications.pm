package OxNotify::API2::Notifications;

use strict;
use warnings;

use Carp ();
use List::Util ();
use Scalar::Util ();
use OxNotify::Core;
use OxNotify::Core::Error;

our $VERSION = '0.2.0';

# Privilege checks as pve-manager declares them for its smtp endpoints and targets
# (PVE/API2/Cluster/Notifications.pm), in RESTHandler form ('perm', path, [privs]) / and / or.
my $MODIFY = ['perm', '/mapping/notifications', ['Mapping.Modify']];
my $AUDIT = ['perm', '/mapping/notifications', ['Mapping.Audit']];
my $USE = ['perm', '/mapping/notifications', ['Mapping.Use']];
# endpoints/smtp GET, endpoints/smtp/{name} GET
my $READ = ['or', $MODIFY, $AUDIT];
# endpoints/smtp POST and PUT: the server talks to the network on the caller's behalf
my $WRITE = [
    'and',
    $MODIFY,
    ['or', ['perm', '/', ['Sys.Audit', 'Sys.Modify']], ['perm', '/', ['Sys.AccessNetwork']]],
];
# targets GET, targets/{name}/test POST
my $ANY = ['or', $MODIFY, $AUDIT, $USE];

# New names: PVE's pve-configid form (so the stack's own checks accept them). Existing names
# only need the looser form older oxnotify versions allowed, so every target stays reachable.
my $NEW_NAME = {
    type => 'string',
    pattern => '^[A-Za-z][A-Za-z0-9_-]{1,63}$',
    description => 'The name of the endpoint (pve-configid: a letter, then letters, digits, '
        . '- or _).',
};
my $NAME = {
    type => 'string',
    pattern => '^[A-Za-z][A-Za-z0-9._-]{0,63}$',
    description => 'The name of the endpoint.',
};
my $DIGEST = {
    type => 'string',
    pattern => '^[0-9a-f]{64}$',
    optional => 1,
    maxLength => 64,
    description => 'Prevent changes if current configuration file has a different digest. '
        . 'This can be used to prevent concurrent modifications (409).',
};
# PVE's pve-userid: user@realm
my $USERID_RE = '^[^\s:/@]+(?:@[^\s:/@]+)*@[A-Za-z][A-Za-z0-9._-]+$';

# Optional properties: a string, an integer, a boolean, a list of strings.
sub _optional {
    my ($type, $desc, %x) = @_;
    return { type => $type, description => $desc, optional => 1, %x };
}

sub _s { return _optional('string', @_) }
sub _int { return _optional('integer', @_) }
sub _bool { return _optional('boolean', @_) }

sub _list {
    my ($desc, %item) = @_;
    return _optional('array', $desc, items => { type => 'string', %item });
}

# Method parameters: an object of exactly these properties.
sub _params { my (%props) = @_; return { additionalProperties => 0, properties => \%props } }

# A returned object with these properties.
sub _object { my (%props) = @_; return { type => 'object', properties => \%props } }

# The SMTP target's keys; the first ones as pve-manager names and types them.
my %SMTP = (
    server => _s('The address of the SMTP server (transport graph: the Graph host).',
        maxLength => 253),
    port => _int('The port to be used. Defaults to 465 for TLS based connections, 587 for STARTTLS '
            . 'based connections and port 25 for insecure plain-text connections.',
        minimum => 1, maximum => 65535),
    mode => _s('Determine which encryption method shall be used for the connection.',
        enum => [qw(insecure starttls tls)], default => 'tls'),
    username => _s('Username for SMTP authentication (OAuth2: the SASL identity if not the '
            . 'from-address).',
        maxLength => 256),
    password => _s('Password for SMTP authentication (stored in the private file, never returned).',
        maxLength => 1024),
    mailto => _list('List of email recipients', maxLength => 256),
    'mailto-user' => _list('List of users (user@realm), resolved to their e-mail address by the '
            . 'host stack.',
        pattern => $USERID_RE, maxLength => 64),
    'from-address' => _s('`From` address for the mail (the XOAUTH2 identity for OAuth2).',
        maxLength => 256),
    author => _s('Author of the mail (display name in From).', maxLength => 256),
    comment => _s('Comment', maxLength => 4096),
    disable => _bool('Disable this target', default => 0),
    'max-connections' => _int('At most this many simultaneous SMTP sessions to this target from '
            . 'this host (default 2; Microsoft 365 allows 3 per mailbox). Further sends wait for a '
            . 'free one within the delivery deadline.',
        minimum => 1, maximum => 100),
    # oxnotify's additions
    'auth-method' => _s('Authentication method (default: plain if a username is set, else none).',
        enum => [qw(none plain google-oauth2 microsoft-oauth2 oauth2)]),
    'allow-insecure-auth' => _bool('Permit authentication without TLS (mode insecure).',
        default => 0),
    'oauth2-client-id' => _s('OAuth2 client (application) ID.', maxLength => 256),
    'oauth2-tenant-id' => _s('Microsoft Entra tenant (GUID or domain).', maxLength => 256),
    'oauth2-authorize-url' => _s('Authorize endpoint (generic provider, or override).',
        maxLength => 2048),
    'oauth2-token-url' => _s('Token endpoint (generic provider, or override).', maxLength => 2048),
    'oauth2-scope' => _s('Scopes (generic provider, or override).', maxLength => 1024),
    'broker-allow-user' => _list('Local users who may fetch this target\'s access token from '
            . 'oxnotify-broker.',
        maxLength => 32),
    'broker-allow-group' => _list('Local groups whose members may fetch this target\'s access '
            . 'token from oxnotify-broker.',
        maxLength => 32),
    'oauth2-client-secret' => _s('OAuth2 client secret (private file, never returned).',
        maxLength => 1024),
    'oauth2-flow' => _s('How tokens are obtained (default authorization-code).',
        enum => [qw(authorization-code client-credentials service-account password device-code)]),
    'oauth2-client-auth' => _s('Token-endpoint client authentication (default: the provider\'s).',
        enum => [qw(client-secret-post client-secret-basic private-key-jwt)]),
    'oauth2-service-account' => _s('service-account: the service account\'s e-mail (client_email).',
        maxLength => 256),
    'oauth2-key-id' => _s('ID of the signing key (Google private_key_id, or the kid of '
            . 'private-key-jwt).',
        maxLength => 256),
    'oauth2-certificate-thumbprint' => _s('private-key-jwt with Microsoft: thumbprint of the '
            . 'certificate (hex; SHA-1 as Entra shows it, or SHA-256).',
        pattern => '^(?:[0-9A-Fa-f]{40}|[0-9A-Fa-f]{64})$'),
    'oauth2-device-authorize-url' => _s('device-code: device authorization endpoint (generic '
            . 'provider, or override).',
        maxLength => 2048),
    'alert-target' => _s('Where alerts about this target go when it fails or is about to: another '
            . 'target\'s name, or sendmail (the host\'s own MTA); never the target itself, and no loop '
            . 'of targets alerting each other.',
        pattern => '^(?:sendmail|[A-Za-z][A-Za-z0-9._-]{0,63})$'),
    'oauth2-credential-expires' => _s('When the client secret or certificate expires (YYYY-MM-DD, '
            . 'as the app registration shows it): alerts 30, 7 and 1 day(s) before.',
        pattern => '^\d{4}-\d{2}-\d{2}$'),
    'oauth2-private-key' => _s('RSA private key (PEM) or a service account\'s JSON key file '
            . '(private file, never returned).',
        maxLength => 16384),
    transport => _s('How notifications are handed over: smtp (default; SMTP submission with '
            . 'XOAUTH2) or graph (Microsoft Graph sendMail over HTTPS, auth-method microsoft-oauth2 '
            . 'only): for Microsoft 365 tenants or mailboxes with SMTP AUTH disabled. With graph, '
            . 'server is the Graph host (graph.microsoft.com; graph.microsoft.us, '
            . 'dod-graph.microsoft.us or microsoftgraph.chinacloudapi.cn for national clouds), '
            . 'port 443, mode tls, username (else from-address) the mailbox that sends, and the '
            . 'app needs the Microsoft Graph permission Mail.Send.',
        enum => [qw(smtp graph)]),
    'oauth2-refresh-token' => _s('A refresh token obtained elsewhere (stored in the state, never '
            . 'returned; empty: keep).',
        maxLength => 16384),
);
my %REQUIRED = map { $_ => 1 } qw(server from-address);

# The parameters that are secrets: accepted, stored privately, never returned. The config's
# private keys come from the core's key table; the refresh token is a parameter, not a config
# key (it goes to the target's OAuth2 state).
my @SECRET_KEYS;

sub secret_keys {
    @SECRET_KEYS = List::Util::uniq(
        (map { $_->{name} } grep { $_->{private} } @{ OxNotify::Core::config_keys() }),
        'oauth2-refresh-token',
    ) if !@SECRET_KEYS;
    return @SECRET_KEYS;
}

# delete: the keys the core's key table says a target can do without (a list, or one
# comma-separated string as PVE clients send it)
sub _delete_param {
    my $keys = OxNotify::Core::config_keys();
    my @deletable = sort map { $_->{name} } grep { $_->{deletable} } @$keys;
    my $k = join('|', map { quotemeta } @deletable);
    return _list('A list of settings you want to delete: ' . join(', ', @deletable) . '.',
        pattern => "^(?:$k)(?:[,;\\s]+(?:$k))*\$");
}

my $ORIGIN = {
    type => 'string',
    enum => [qw(user-created builtin modified-builtin)],
    description => 'Show if this entry was created by a user or was built-in',
};

# What is coming or wrong for a target (the same list in the status, the list and alerts).
my $FORECAST = {
    type => 'array',
    optional => 1,
    description => 'What is coming or wrong, each with a ready sentence; `alert` marks what '
        . 'the alert-target is told about.',
    items => _object(
        kind => _s('What it is about.', enum => [qw(needs-reauthorization needs-admin-fix
            refresh-token-expires google-testing-limit refresh-stalled credential-expires
            outbox-waiting messages-given-up)]),
        days_left => _int('Whole days until it happens (0 or less: it has), where known.'),
        text => { type => 'string', description => 'One sentence: what, when, what to do.' },
        alert => { type => 'boolean', description => 'A problem to alert about now.' },
    ),
};

# What a GET answers per target: the public keys (never a secret) and what oxnotify adds.
sub _view {
    my %secret = map { $_ => 1 } secret_keys();
    return (
        (map { my %p = (%{ $SMTP{$_} }, optional => 1); delete $p{default}; ($_ => \%p) }
            grep { !$secret{$_} } keys %SMTP),
        name => { type => 'string', description => 'The name of the endpoint.' },
        type => _s('Type of the target.', enum => ['smtp']),
        digest => _s('Digest of the configuration file.'),
        warning => _s('What the admin should change (e.g. authentication without TLS on an '
            . 'existing target).'),
        'outbox-queued' => _int('Notifications waiting in the outbox.'),
        'outbox-oldest-age' => _int('Seconds the oldest waiting notification has waited.'),
        forecast => $FORECAST,
        error => _s('Why this section of the config file is invalid (then only name, type, '
            . 'digest are set).'),
    );
}

my $TIME = sub { _int("$_[0] (Unix time).") };
my $STATUS = _object(
    target => { type => 'string', description => 'Target name.' },
    auth_method => { type => 'string', description => 'Auth method.' },
    authorized => { type => 'boolean', description => 'A refresh token is stored.' },
    authorized_at => $TIME->('When the admin authorized'),
    last_refresh => $TIME->('Last successful refresh'),
    refresh_token_issued_at => $TIME->('When the current refresh token was issued'),
    refresh_token_age_days => _int('Age of the refresh token in days.'),
    rotations => {
        type => 'integer',
        description => 'Refresh-token rotations since the authorization.',
    },
    estimated_expiry => $TIME->('Estimated expiry of the refresh token'),
    access_token_valid_until => $TIME->('A cached access token is valid until then'),
    needs_reauthorization => {
        type => 'boolean',
        description => 'The provider said the grant is gone.',
    },
    last_error => {
        %{ _object(message => { type => 'string' }, time => { type => 'integer' }) },
        optional => 1,
        description => 'Last error.',
    },
    warning => _s('What the admin should do, if anything.'),
    outbox => {
        %{ _object(
            queued => { type => 'integer' },
            oldest_age_secs => { type => 'integer', optional => 1 },
            last_error => { type => 'string', optional => 1 },
            warning => { type => 'string', optional => 1 },
            given_up => _object(
                count => { type => 'integer' },
                last_at => { type => 'integer', optional => 1 },
                last_title => { type => 'string', optional => 1 },
                last_reason => { type => 'string', optional => 1 },
            ),
        ) },
        optional => 1,
        description => 'The outbox: queue depth, oldest age, messages given up.',
    },
    last_refresh_by => _s('Node that made the last refresh (cluster store).'),
    store_writable => _bool('Cluster store: the shared file system takes writes (false: no '
        . 'quorum?).'),
    forecast => $FORECAST,
    alert_target => _s('Where alerts about this target go (alert-target), if set.'),
);

# JSON booleans as PVE answers them (0/1), so CLI output and result verification agree.
sub _plain {
    my ($v) = @_;
    if (ref($v) eq 'HASH') { return { map { ($_ => _plain($v->{$_})) } keys %$v } }
    if (ref($v) eq 'ARRAY') { return [map { _plain($_) } @$v] }
    if (Scalar::Util::blessed($v) && $v->isa('JSON::PP::Boolean')) { return $v ? 1 : 0 }
    return $v;
}

# Copy of %$p without undefined values (PVE passes optional parameters as absent or undef).
sub _defined {
    my ($p) = @_;
    return { map { ($_ => $p->{$_}) } grep { defined $p->{$_} } keys %$p };
}

# The parameters of an update as the core wants them: delete as a list of keys.
sub _update_params {
    my ($p) = @_;
    $p = _defined($p);
    my $delete = $p->{delete} // return $p;
    $p->{delete} = [map { grep { length } split(/[,;\s]+/) } ref($delete) ? @$delete : $delete];
    return $p;
}

# The targets as list items: every one is created by a user (pve-manager's origin).
sub _user_created {
    my ($list) = @_;
    return [map { { %$_, origin => 'user-created' } } @{ _plain($list) }];
}

# What an admin is about to grant, shown before the provider is opened.
my %WHO_IS_ASKED = (
    'client-id' => _s('The app (client ID) that asks for access.'),
    scope => _s('What it asks for.'),
    'authorize-host' => _s('Where the admin logs in (the device flow: the device endpoint).'),
    'token-host' => _s('Where the tokens come from.'),
);

sub _descriptors {
    my %view = _view();
    return (
        {
            name => 'get_smtp_endpoints',
            path => 'endpoints/smtp',
            method => 'GET',
            description => 'Returns a list of all smtp endpoints (never returns secrets).',
            permissions => { check => $READ },
            protected => 1,
            parameters => _params(),
            returns => {
                type => 'array',
                items => _object(%view, origin => $ORIGIN),
                links => [{ rel => 'child', href => '{name}' }],
            },
            code => sub { _user_created(OxNotify::Core::list_targets()) },
        },
        {
            name => 'create_smtp_endpoint',
            path => 'endpoints/smtp',
            method => 'POST',
            description => 'Create a new smtp endpoint. Needs mailto or mailto-user.',
            permissions => { check => $WRITE },
            protected => 1,
            parameters => _params(
                %SMTP,
                name => $NEW_NAME,
                map { ($_ => { %{ $SMTP{$_} }, optional => 0 }) } keys %REQUIRED,
            ),
            returns => { type => 'null' },
            code => sub { OxNotify::Core::create_target(_defined($_[0])); return undef },
        },
        {
            name => 'get_smtp_endpoint',
            path => 'endpoints/smtp/{name}',
            method => 'GET',
            description => 'Return a specific smtp endpoint (never returns secrets). 404 if it '
                . 'does not exist.',
            permissions => { check => $READ },
            protected => 1,
            parameters => _params(name => $NAME),
            returns => _object(%view),
            code => sub { _plain(OxNotify::Core::get_target({ name => $_[0]{name} })) },
        },
        {
            name => 'update_smtp_endpoint',
            path => 'endpoints/smtp/{name}',
            method => 'PUT',
            description => 'Update existing smtp endpoint. Empty secrets keep the stored ones; '
                . 'delete removes keys.',
            permissions => { check => $WRITE },
            protected => 1,
            parameters => _params(
                %SMTP,
                name => $NAME,
                digest => $DIGEST,
                delete => _delete_param(),
            ),
            returns => { type => 'null' },
            code => sub { OxNotify::Core::update_target(_update_params($_[0])); return undef },
        },
        {
            name => 'delete_smtp_endpoint',
            path => 'endpoints/smtp/{name}',
            method => 'DELETE',
            description => 'Remove smtp endpoint with its secrets and OAuth2 state.',
            permissions => { check => $MODIFY },
            protected => 1,
            parameters => _params(name => $NAME, digest => $DIGEST),
            returns => { type => 'null' },
            code => sub { OxNotify::Core::delete_target(_defined($_[0])); return undef },
        },
        {
            name => 'smtp_oauth2_authorize_url',
            path => 'smtp-oauth2-authorize-url',
            method => 'POST',
            description => 'Start authorizing an OAuth2 target: returns the provider URL with '
                . 'state and PKCE. The server keeps the PKCE verifier, bound to the state (single '
                . 'use, 10 minutes).',
            permissions => { check => $WRITE },
            protected => 1,
            parameters => _params(
                name => $NAME,
                'redirect-uri' => {
                    type => 'string',
                    maxLength => 2048,
                    description => 'Where the provider sends the browser back.',
                },
            ),
            returns => _object(
                url => { type => 'string', description => 'Open this in the browser.' },
                state => { type => 'string', description => 'Pass it back with the code.' },
                target => _s('The target.'),
                %WHO_IS_ASKED,
            ),
            code => sub { OxNotify::Core::authorize_begin(_defined($_[0])) },
        },
        {
            name => 'smtp_oauth2_token',
            path => 'smtp-oauth2-token',
            method => 'POST',
            description => 'Exchange an authorization code on the backend. With state (from '
                . 'smtp-oauth2-authorize-url) the stored PKCE verifier and the target\'s '
                . 'registration are used and the result is stored in the target; without it '
                . '(reference-compatible) the refresh token is returned.',
            permissions => { check => $WRITE },
            protected => 1,
            parameters => _params(
                'authorization-code' => {
                    type => 'string',
                    maxLength => 8192,
                    description => 'The code from the redirect.',
                },
                state => _s('The state from smtp-oauth2-authorize-url.', maxLength => 512),
                target => {
                    %$NAME,
                    optional => 1,
                    description => 'Target the authorization is for.',
                },
                'auth-method' => _s('OAuth2 method (without state).',
                    enum => [qw(google-oauth2 microsoft-oauth2 oauth2)]),
                'client-id' => _s('Client ID (without state).', maxLength => 256),
                'client-secret' => _s('Client secret (without state).', maxLength => 1024),
                'tenant-id' => _s('Microsoft tenant (without state).', maxLength => 256),
                'redirect-uri' => _s('Redirect URI of the authorize request (without state).',
                    maxLength => 2048),
                'token-url' => _s('Token endpoint override (without state).', maxLength => 2048),
            ),
            returns => _object(
                target => _s('The target now authorized (with state).'),
                'refresh-token' => _s('The refresh token (without state, reference-compatible).'),
            ),
            code => sub { OxNotify::Core::smtp_oauth2_token(_defined($_[0])) },
        },
        {
            name => 'smtp_oauth2_device',
            path => 'smtp-oauth2-device',
            method => 'POST',
            description => 'Device authorization (RFC 8628) of a target with oauth2-flow '
                . 'device-code: without handle, start it (returns the verification URL and user '
                . 'code to show, and a handle); with handle, wait up to 10 seconds for the user: '
                . 'authorized 1 once approved (the authorization is stored), 0 if not yet (call '
                . 'again), an error if declined or expired.',
            permissions => { check => $WRITE },
            protected => 1,
            parameters => _params(
                name => $NAME,
                handle => _s('The handle of a started device authorization.', maxLength => 512),
            ),
            returns => _object(
                target => _s('The target.'),
                %WHO_IS_ASKED,
                authorized => _bool('With handle: approved and stored.'),
                handle => _s('Pass it back to finish.'),
                verification_uri => _s('Where the user goes.'),
                verification_uri_complete => _s('The same with the code filled in.'),
                user_code => _s('The code the user enters.'),
                expires_in => _int('Seconds until the code expires.'),
                interval => _int('Seconds between polls.'),
            ),
            code => sub {
                my ($name, $handle) = @{ $_[0] }{qw(name handle)};
                return OxNotify::Core::device_begin({ name => $name }) if !defined $handle;
                my $done = OxNotify::Core::device_complete({ handle => $handle, target => $name });
                return _plain($done);
            },
        },
        {
            name => 'test_target',
            path => 'targets/{name}/test',
            method => 'POST',
            description => 'Send a test notification to a provided target.',
            permissions => { check => $ANY },
            protected => 1,
            parameters => _params(name => $NAME),
            returns => { type => 'null' },
            code => sub { OxNotify::Core::test_target({ name => $_[0]{name} }); return undef },
        },
        {
            name => 'verify_target',
            path => 'targets/{name}/verify',
            method => 'POST',
            description => 'Check that a target can log in, sending nothing: an access token (cached or '
                . 'new), then connect, EHLO, TLS, AUTH and QUIT. Each step with its time; a failure '
                . 'names the step, its kind and what to do. At most once per target every 10 s.',
            permissions => { check => $ANY },
            protected => 1,
            parameters => _params(name => $NAME),
            returns => _object(
                target => _s('The target.'),
                ok => _bool('The server accepted the login.'),
                credential => _s('cached token, new token, password or none.'),
                steps => { type => 'array', description => 'Each step ({step, ms}).' },
                error => _s('Why it failed.'),
                kind => _s('What must happen next, if it failed.'),
            ),
            code => sub { _plain(OxNotify::Core::verify({ name => $_[0]{name} })) },
        },
        {
            name => 'oauth2_status',
            path => 'targets/{name}/oauth2-status',
            method => 'GET',
            description => 'OAuth2 health of a target: authorization, last refresh, token age, '
                . 'estimated expiry, last error, warning.',
            permissions => { check => $READ },
            protected => 1,
            parameters => _params(name => $NAME),
            returns => $STATUS,
            code => sub { _plain(OxNotify::Core::target_status({ name => $_[0]{name} })) },
        },
        {
            name => 'get_targets',
            path => 'targets',
            method => 'GET',
            description => 'Returns a list of all entities that can be used as notification '
                . 'targets.',
            permissions => { check => $ANY },
            protected => 1,
            parameters => _params(),
            returns => {
                type => 'array',
                links => [{ rel => 'child', href => '{name}' }],
                items => _object(
                    name => { type => 'string', description => 'Name of the target.' },
                    type => {
                        type => 'string',
                        enum => [qw(sendmail gotify smtp webhook)],
                        description => 'Type of the target.',
                    },
                    comment => _s('Comment'),
                    disable => _bool('Show if this target is disabled'),
                    origin => $ORIGIN,
                    error => _s('Why the target\'s config is invalid.'),
                    warning => _s('What the admin should change.'),
                ),
            },
            code => sub { _plain(OxNotify::Core::get_targets()) },
        },
    );
}

# Method names and paths that do not collide with pve-manager's PVE::API2::Cluster::Notifications
# (which has endpoints/smtp..., targets, targets/{name}/test of its own): our SMTP type gets
# its own segment.
sub _beside_pve {
    my ($m, $type) = @_;
    (my $u = $type) =~ tr/-/_/;
    my %path = (
        'endpoints/smtp' => "endpoints/$type",
        'endpoints/smtp/{name}' => "endpoints/$type/{name}",
        'targets/{name}/test' => "endpoints/$type/{name}/test",
        'targets/{name}/verify' => "endpoints/$type/{name}/verify",
        'targets/{name}/oauth2-status' => "endpoints/$type/{name}/oauth2-status",
        'targets' => "$type-targets",
        'smtp-oauth2-authorize-url' => "$type-oauth2-authorize-url",
        'smtp-oauth2-token' => "$type-oauth2-token",
        'smtp-oauth2-device' => "$type-oauth2-device",
    );
    my %name = (
        test_target => "test_${u}_endpoint",
        verify_target => "verify_${u}_endpoint",
        oauth2_status => "${u}_oauth2_status",
        get_targets => "get_${u}_targets",
    );
    $m->{path} = $path{ $m->{path} } // die "no beside-pve path for $m->{path}";
    $m->{name} = $name{ $m->{name} } // ($m->{name} =~ s/smtp/$u/r);
    return $m;
}

# Wrap the method's code so that errors reach the host in its own form.
sub _with_errors {
    my ($m, $errors) = @_;
    return $m if !defined $errors || $errors eq 'oxnotify';
    my $convert = ref($errors) eq 'CODE' ? $errors
        : $errors eq 'pve' ? \&pve_exception
        : Carp::croak("methods(): errors must be 'oxnotify', 'pve' or a code reference");
    my $code = $m->{code};
    $m->{code} = sub {
        my @r = eval { $code->(@_) };
        if (my $err = $@) {
            die $convert->($err)
                if Scalar::Util::blessed($err) && $err->isa('OxNotify::Core::Error');
            die $err;
        }
        return wantarray ? @r : $r[0];
    };
    return $m;
}

# An OxNotify::Core::Error as PVE::Exception: what PVE's HTTP server keeps the status of.
sub pve_exception {
    my ($err) = @_;
    require PVE::Exception;
    my $exc = PVE::Exception->new($err->message . "\n", code => $err->code,
        ($err->errors ? (errors => $err->errors) : ()));
    return $exc;
}

# Fresh descriptors (RESTHandler adds its own keys to what it registers, so each call copies).
sub methods {
    my (%opts) = @_;
    my $layout = $opts{layout} // 'own';
    Carp::croak("methods(): unknown layout '$layout' (own, beside-pve)")
        if $layout !~ /^(?:own|beside-pve)$/;
    my $type = $opts{type} // 'oxnotify-smtp';
    Carp::croak("methods(): type '$type' is not a path segment") if $type !~ /^[a-z][a-z0-9-]*$/;
    my @m = _descriptors();
    @m = map { _beside_pve($_, $type) } @m if $layout eq 'beside-pve';
    return map { _with_errors($_, $opts{errors}) } @m;
}

# Register the methods into a RESTHandler class: methods(%opts), each via register_method.
sub register {
    my ($class, %opts) = @_;
    $class->register_method($_) for methods(%opts);
    return;
}

my %BY_NAME;

# One descriptor by name (the standalone layout and errors).
sub method {
    my ($name) = @_;
    %BY_NAME = map { $_->{name} => $_ } methods() if !%BY_NAME;
    return $BY_NAME{$name} // die OxNotify::Core::Error->new("no API method '$name'", 500);
}

1;

__END__

=head1 NAME

OxNotify::API2::Notifications - API method descriptors for oxnotify's notification targets

=head1 SYNOPSIS

    # a PVE-style stack: a class of its own, mounted as a subtree ...
    package PVE::API2::OxNotify;
    use base qw(PVE::RESTHandler);
    OxNotify::API2::Notifications::register(__PACKAGE__, errors => 'pve');

    # ... or next to the stack's own notification methods, in the same class
    OxNotify::API2::Notifications::register('PVE::API2::Cluster::Notifications',
        layout => 'beside-pve', errors => 'pve');

    # anything else
    my $m = OxNotify::API2::Notifications::method('get_smtp_endpoint');
    my $target = $m->{code}->({ name => 'm365' });

=head1 DESCRIPTION

Each method is data in the common RESTHandler format: C<name>, C<path>, C<method>,
C<protected>, C<permissions> (C<check> expressions: C<['perm', PATH, [PRIVS]]>, C<'and'>,
C<'or'>), C<description>, C<parameters> (JSON schema with C<optional>), C<returns> (every
property each method answers, so result verification and CLI output work), and a short
C<code> closure that only passes the parameters to L<OxNotify::Core>. The caller validates the
parameters against the schema and checks the permissions first (L<OxNotify::API2::Schema> does
both for the standalone server and the CLI).

Every method is C<protected>: they read the root-only private file or the OAuth2 state, so a
PVE-style proxy (running as www-data) forwards them to its privileged daemon. Permissions,
parameter names and formats are those of pve-manager's smtp endpoints (C<mailto-user>,
C<delete> of every optional key, names in C<pve-configid> form on create), plus the OAuth2
keys. List items carry C<origin> (always C<user-created>) as pve-manager's do.

=head2 Errors

C<errors =E<gt> 'oxnotify'> (default): the methods die with L<OxNotify::Core::Error> (message,
HTTP-style code, C<errors> per parameter for a 400). C<errors =E<gt> 'pve'>: they die with
C<PVE::Exception> (C<code>, C<errors>), the only exception PVE's HTTP server keeps the status
of. C<errors =E<gt> sub { my ($err) = @_; return $exception }> converts for other stacks. The
choice belongs to the copy of the descriptors a stack registers, so a process can hold both.

=head2 Layouts

C<layout =E<gt> 'own'> (default; what C<oxnotify-server> mounts): C<endpoints/smtp>,
C<endpoints/smtp/{name}>, C<smtp-oauth2-authorize-url>, C<smtp-oauth2-token>,
C<targets/{name}/test>, C<targets/{name}/verify>, C<targets/{name}/oauth2-status>, C<targets>. Mount it as a subtree of
a PVE-style API (C<subclass>).

C<layout =E<gt> 'beside-pve'> (with C<type>, default C<oxnotify-smtp>): names and paths that can
be registered into pve-manager's C<PVE::API2::Cluster::Notifications> itself without
collisions: C<endpoints/TYPE>, C<endpoints/TYPE/{name}>, C<endpoints/TYPE/{name}/test>,
C<endpoints/TYPE/{name}/verify>,
C<endpoints/TYPE/{name}/oauth2-status>, C<TYPE-targets>, C<TYPE-oauth2-authorize-url>,
C<TYPE-oauth2-token>; method names with C<smtp> replaced by the type
(C<get_oxnotify_smtp_endpoints>, C<test_oxnotify_smtp_endpoint>, C<oxnotify_smtp_oauth2_status>,
C<get_oxnotify_smtp_targets>).

=head1 FUNCTIONS

=over

=item methods(%opts) - fresh descriptors; C<layout>, C<type>, C<errors> as above

=item register($class, %opts) - C<< $class->register_method($_) >> for each of C<methods(%opts)>

=item method($name) - one descriptor of the default layout

=item pve_exception($error) - an L<OxNotify::Core::Error> as C<PVE::Exception>

=item secret_keys() - the parameters that are secrets (stored privately, never returned): the
private keys of the core's key table (C<OxNotify::Core::config_keys>), and
C<oauth2-refresh-token>; the one list the CLI and the return schemas use

=back

=cut
