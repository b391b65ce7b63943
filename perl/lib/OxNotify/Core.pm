package OxNotify::Core;

use strict;
use warnings;

use Carp ();
use Cpanel::JSON::XS ();
use File::Basename ();
use File::Spec ();
use FFI::Platypus 2.00;
use FFI::Platypus::Memory ();

use OxNotify::Core::Error;

our $VERSION = '0.1.0';

# The C ABI this module speaks (crates/notify-perl/src/lib.rs).
use constant ABI_VERSION => 1;

# Functions exported by the library; each takes a hashref and returns Perl data.
my @FUNCTIONS = qw(
    list_targets get_target create_target update_target delete_target test_target
    authorize_url authorize_begin authorize_complete device_begin device_complete
    exchange_smtp_oauth2_code smtp_oauth2_token get_targets config_keys providers verify refresh_targets daily send
    target_status selftest
    send_burst outbox_list outbox_flush outbox_drop outbox_status
);

my $JSON = Cpanel::JSON::XS->new->utf8->canonical->allow_nonref;
my ($ffi, $free, $set_resolver, %fn);

# Where the shared object is: $OXNOTIFY_LIB, else the newest build in this checkout, else the
# installed (multiarch) location.
sub library_path {
    return $ENV{OXNOTIFY_LIB} if $ENV{OXNOTIFY_LIB};
    my $here = File::Basename::dirname(File::Spec->rel2abs(__FILE__));
    my $root = File::Spec->catdir($here, '..', '..', '..');
    my @built = sort { (stat $b)[9] <=> (stat $a)[9] }
        grep { -f $_ }
        map { File::Spec->catfile($root, 'target', $_, 'libnotify_perl.so') } qw(release debug);
    return $built[0] if @built;
    for my $dir (glob('/usr/lib/*-linux-gnu/oxnotify'), '/usr/lib/oxnotify') {
        my $so = "$dir/libnotify_perl.so";
        return $so if -f $so;
    }
    die OxNotify::Core::Error->new(
        "oxnotify: libnotify_perl.so not found (set OXNOTIFY_LIB, build with cargo, or install the package)", 500);
}

sub _init {
    return if $ffi;
    my $path = library_path();
    my $f = FFI::Platypus->new(api => 2, lib => $path);
    my $version = $f->function(oxnotify_abi_version => [] => 'uint32')->call;
    die OxNotify::Core::Error->new(
        "oxnotify: $path speaks ABI version $version, this OxNotify::Core needs " . ABI_VERSION, 500)
        if $version != ABI_VERSION;
    $free = $f->function(oxnotify_free => ['opaque'] => 'void');
    $set_resolver = $f->function(oxnotify_set_user_email_resolver => ['(string)->opaque'] => 'void');
    $fn{$_} = $f->function("oxnotify_$_" => ['string'] => 'opaque') for @FUNCTIONS;
    $ffi = $f;
}

sub _call {
    my ($name, $params) = @_;
    _init();
    $params //= {};
    die OxNotify::Core::Error->new("$name: parameters must be a hash reference", 400)
        if ref($params) ne 'HASH';
    my $in = eval { $JSON->encode($params) };
    die OxNotify::Core::Error->new("$name: parameters cannot be encoded as JSON: $@", 400)
        if !defined $in;
    my $ptr = $fn{$name}->call($in);
    my $out = $ffi->cast('opaque' => 'string', $ptr);
    $free->call($ptr);
    my $answer = eval { $JSON->decode($out) };
    die OxNotify::Core::Error->new("$name: malformed answer from the library", 500)
        if ref($answer) ne 'HASH';
    if (my $err = $answer->{error}) {
        die OxNotify::Core::Error->from_answer($err);
    }
    return $answer->{ok};
}

for my $name (@FUNCTIONS) {
    no strict 'refs';
    *{$name} = sub { _call($name, @_) };
}

# The host stack's user -> e-mail lookup (like proxmox-notify's Context): the one hook a stack
# provides so that targets can name users (mailto-user) instead of addresses. The library
# asks it within the send itself (one call, no target listing first); the closure is kept
# here for as long as the library may call it.
my $resolver_closure;

sub set_user_email_resolver {
    my ($cb) = @_;
    die OxNotify::Core::Error->new('set_user_email_resolver: expects a code reference or undef', 400)
        if defined $cb && ref($cb) ne 'CODE';
    _init();
    my $closure = defined $cb ? $ffi->closure(sub {
        my ($user) = @_;
        # an address the library frees, or NULL; a resolver that dies knows no address
        my $addr = eval { $cb->($user) };
        return defined $addr && length $addr ? FFI::Platypus::Memory::strdup("$addr") : undef;
    }) : undef;
    $set_resolver->call($closure);
    $resolver_closure = $closure;    # the old one only goes once the library forgot it
    return;
}

# The ABI version of the loaded library.
sub abi_version {
    _init();
    return $ffi->function(oxnotify_abi_version => [] => 'uint32')->call;
}

1;

__END__

=head1 NAME

OxNotify::Core - Perl binding of oxnotify's notification core (SMTP with OAuth2/XOAUTH2)

=head1 SYNOPSIS

    use OxNotify::Core;

    OxNotify::Core::create_target({
        name => 'm365', server => 'smtp.office365.com', mode => 'starttls',
        'auth-method' => 'microsoft-oauth2', 'from-address' => 'alerts@example.com',
        mailto => ['ops@example.com'], 'oauth2-client-id' => $client_id,
        'oauth2-tenant-id' => $tenant, 'oauth2-client-secret' => $secret,
    });
    my $auth = OxNotify::Core::authorize_url({ name => 'm365', 'redirect-uri' => $uri });
    # ... user authorizes at $auth->{url}, the redirect brings code + state back ...
    OxNotify::Core::exchange_smtp_oauth2_code({
        'auth-method' => 'microsoft-oauth2', 'client-id' => $client_id,
        'client-secret' => $secret, 'tenant-id' => $tenant, 'authorization-code' => $code,
        'redirect-uri' => $uri, 'pkce-verifier' => $auth->{'pkce-verifier'}, target => 'm365',
    });
    my $results = OxNotify::Core::send({ targets => ['m365'], title => 'Backup failed',
        body => "job 42 failed\n", severity => 'error' });

=head1 DESCRIPTION

Loads C<libnotify_perl.so> (the Rust core) with FFI::Platypus. Every function takes one hash
reference of parameters (API names, kebab-case) and returns plain Perl data. Failures C<die>
with an L<OxNotify::Core::Error> that has C<message> and an HTTP-style C<code> and stringifies
to the message; messages never contain secrets.

Paths come from the environment: C<OXNOTIFY_CONFIG_DIR> (default /etc/oxnotify),
C<OXNOTIFY_STATE_DIR> (default /var/lib/oxnotify). The library is found via C<OXNOTIFY_LIB>,
else the newest build in the source checkout (target/release or target/debug), else the
installed location /usr/lib/E<lt>multiarchE<gt>/oxnotify/libnotify_perl.so. Its ABI version is
checked at load time.

=head1 FUNCTIONS

=over

=item set_user_email_resolver(sub { my ($userid) = @_; return $address_or_undef })

Registers the host stack's lookup of a user's e-mail address (once, at start-up; C<undef>
removes it). C<send> and C<test_target> resolve each C<mailto-user> entry of the targets
through it and pass the addresses to the library. Users without an address are skipped; a
target without any recipient then fails. Without a resolver, a target with C<mailto-user>
fails with an error saying that the host must register one.

=item list_targets()

All SMTP targets: a list of hashes with the public config keys and the config C<digest>.
Targets with invalid config carry C<name> and C<error>. Never contains secrets.

=item get_target({ name })

One target (public keys + C<digest>). 404 if it does not exist.

=item create_target({ name, server, ..., password?, 'oauth2-client-secret'?, 'oauth2-refresh-token'? })

Create a target. Secrets go to the root-only private file, a refresh token to the target's
OAuth2 state. 400 on invalid input (the error names the parameter); nothing is written then.

=item update_target({ name, ..., delete => [keys]?, digest? })

Change a target. Given keys replace, C<delete> removes keys, an empty secret or refresh token
leaves the stored one alone. 409 if C<digest> no longer matches (someone else changed the config).

=item delete_target({ name, digest? })

Remove a target, its secrets and its OAuth2 state.

=item test_target({ name })

Send a test notification.

=item authorize_url({ name, 'redirect-uri' })

Returns C<{ url, state, 'pkce-verifier' }>. Keep C<state> and the verifier server-side until
the provider redirects back, then pass the verifier to C<exchange_smtp_oauth2_code>.

=item authorize_begin({ name, 'redirect-uri' })

Like C<authorize_url>, but the PKCE verifier stays server-side (in the state directory, shared
by all worker processes), bound to the returned C<state>: single use, valid 10 minutes.
Returns C<{ url, state, target }>.

=item authorize_complete({ state, 'authorization-code', target? })

Finish an authorization begun with C<authorize_begin>: exchanges the code with the target's
client registration and the stored verifier, and stores the result. An unknown, replayed,
expired or foreign (C<target> given and different) state is a 400.

=item device_begin({ name })

Start a device authorization (RFC 8628) for a target with C<oauth2-flow device-code>. Returns
C<{ verification_uri, verification_uri_complete?, user_code, expires_in, interval, handle,
target }>: show the URL and code to the user; the device code stays server-side, bound to
C<handle> (single use, 10 minutes).

=item device_complete({ handle, target?, wait? })

Poll for at most C<wait> seconds (default 10, at most 120) until the user approved the code
(the refresh token is stored in the target's state), declined it (C<access_denied>) or it
expired (C<expired_token>); honours the provider's interval and C<slow_down>. Returns
C<{ target, authorized }>; C<authorized> false: not yet, call again with the same handle.

=item exchange_smtp_oauth2_code({ 'auth-method', 'client-id', 'client-secret'?, 'tenant-id'?, 'authorization-code', 'redirect-uri', 'pkce-verifier'?, target?, 'token-url'?, 'authorize-url'?, scope? })

Exchange an authorization code at the provider (backend side). Returns
C<{ 'refresh-token' }>; with C<target> the authorization is stored in its state as well.

=item refresh_targets({ 'lock-timeout'? })

Refresh every enabled OAuth2 target, one run at a time (waits up to C<lock-timeout>
seconds, default 60, for another run). Returns C<{ locked, reports }>: C<locked> is true if
another run went on the whole time; each report has C<target>, C<outcome> (C<refreshed>,
C<rotated>, C<needs-reauthorization>, C<failed>), C<error> and C<status>.

=item smtp_oauth2_token({ state, 'authorization-code', target? } | { 'auth-method', 'client-id', 'redirect-uri', 'authorization-code', ... })

The C<smtp-oauth2-token> API call: with C<state> it finishes an authorization started with
C<authorize_begin> (C<{ target }>); without it (the reference's form) it exchanges the code
like C<exchange_smtp_oauth2_code> and returns C<{ 'refresh-token' }>. 400 with C<errors>
naming each missing parameter.

=item get_targets()

Every target as a notification stack lists its targets: C<name>, C<type>, C<disable> (0/1),
C<origin>, and C<comment>, C<error>, C<warning> where present.

=item verify({ name })

A login check that sends nothing: C<{ target, ok, credential, steps =E<gt> [{ step, ms }],
error?, kind? }> (C<credential>: C<cached token>, C<new token>, C<password> or C<none>). At
most one per target every 10 seconds (a transient error otherwise).

=item config_keys()

The SMTP target keys: C<[{ name, kind, private, multi, deletable, applies, needed, choices }]>
(the library's one key table; API schemas, the CLI and the page derive their lists from it).
C<applies> and C<needed> say which targets the key means something for and which need it: a
list of alternatives, each a list of C<{ key, values }> that must all hold (C<""> in values:
unset; C<[[]]> every target, C<[]> none). C<choices> lists a choice key's values, each with
the targets it is allowed for (C<{ value, applies }>).

=item providers()

The named OAuth2 providers as an admin registers an app for them:
C<[{ 'auth-method', scope, 'app-only-scope', device, 'refresh-token-lifetime-days',
'refresh-token-idle-days', 'reauth-hint' }]>.

=item daily({ 'lock-timeout'? })

The whole daily job in one call and one config read: C<refresh_targets>' answer (plus
C<holder>: who holds the daily lock when C<locked>; C<warnings>: C<[target, warning]> of
targets that were not refreshed) and C<flush>, the C<outbox_flush> reports.

=item send({ targets => [...], title, body?, 'html-body'?, severity?, fields? })

Send a notification. Returns one C<{ target, ok, queued?, id?, message?, code?, kind? }> per
target; a failing target does not stop the others. C<ok> is true when the server took the
message, and also when it could not be delivered within the delivery deadline for a transient
reason and waits in the outbox: then C<queued> is true, C<id> names the outbox entry and
C<message> says why. C<ok> false means failed for good (C<kind> says what to do).

=item send_burst({ target, notifications => [ { title, body?, 'html-body'?, severity?, fields? }, ... ] })

Send several notifications to one target over one SMTP session. Returns one result per
notification, in order, shaped as for C<send>.

=item outbox_list({ target? })

The messages waiting in the outbox (oldest first per target): C<id>, C<target>, C<title>,
C<to>, C<first_attempt>, C<last_attempt>, C<attempts>, C<age_secs>, C<last_error>.

=item outbox_flush({ target? })

Deliver what waits (each target's queue over one session). One report per target:
C<delivered>, C<sessions>, C<failed> and C<expired> (lists of C<[id, text]>: given up),
C<remaining>, C<error>, C<busy> (another flush was running).

=item outbox_drop({ id })

Remove a waiting message without sending it; returns its listing entry.

=item outbox_status({ name })

C<queued>, C<oldest_age_secs>, C<last_error>, C<given_up> and C<warning> of a target's outbox.

=item target_status({ name })

OAuth2 health: C<authorized>, C<last_refresh>, C<refresh_token_age_days>,
C<estimated_expiry>, C<needs_reauthorization>, C<last_error>, C<warning>; with the cluster
store also C<last_refresh_by> (the node) and C<store_writable> (false without quorum).

=item selftest($params)

Echoes its parameters; C<{ panic =E<gt> 1 }> (JSON true) makes the library panic, which must
arrive here as an exception. For tests and overhead measurements.

=item abi_version()

The ABI version of the loaded library.

=item library_path()

Where the shared object is loaded from.

=back

=cut
