package RigTest;

# Test helpers: the real rig (see scripts/run-with-rig.sh), a private config/state dir per test
# file, targets pointing at the rig's OAuth2 server, and the rig's browser stand-in.

use strict;
use warnings;

use Cpanel::JSON::XS ();
use Exporter 'import';
use File::Basename ();
use File::Temp ();
use Test::More ();
use URI ();

our @EXPORT = qw(rig need need_rig setup_dirs ms_target_params login_and_consent authorize find_mail mail_count new_mail state_of uniq);

my $ROOT = File::Basename::dirname(__FILE__) . '/../../..';
our $REDIRECT = 'http://127.0.0.1:47125/callback';

sub rig { return { map { (lc(s/^RIG_//r) => $ENV{$_}) } grep { /^RIG_/ } keys %ENV } }

# A test file that needs something this checkout may lack (the rig, a browser): skip the
# whole file with the reason, unless OXNOTIFY_REQUIRE_RIG=1 (the full suite), where a
# missing part is a failure.
sub need {
    my ($ok, $reason) = @_;
    return if $ok;
    Test::More::BAIL_OUT("$reason (OXNOTIFY_REQUIRE_RIG=1)") if $ENV{OXNOTIFY_REQUIRE_RIG};
    Test::More::plan(skip_all => $reason);
}

sub need_rig {
    need($ENV{RIG_ISSUER}, 'needs the test rig: RIG_* variables not set (run via scripts/run-with-rig.sh)');
}

# Fresh config/state dirs for this process (inherited by children).
sub setup_dirs {
    my $dir = File::Temp::tempdir(CLEANUP => 1);
    $ENV{OXNOTIFY_CONFIG_DIR} = "$dir/etc";
    $ENV{OXNOTIFY_STATE_DIR} = "$dir/var";
    # the rig stands in for Microsoft and Google on loopback (run-with-rig.sh exports the same):
    # root's setting that lets the named providers' endpoints point there
    $ENV{OXNOTIFY_ALLOW_PROVIDER_HOSTS} //= '127.0.0.1,localhost';
    return $dir;
}

# Create-target parameters for a Microsoft-style (rotating) target at the rig.
sub ms_target_params {
    my ($name, $from) = @_;
    # without the rig (tests that only validate): well-formed values that lead nowhere
    my $r = { issuer => 'http://127.0.0.1:9', smtp_starttls_port => 9, %{ rig() } };
    return {
        name => $name, server => 'localhost', port => $r->{smtp_starttls_port}, mode => 'starttls',
        'auth-method' => 'microsoft-oauth2', 'from-address' => $from, author => 'oxnotify perl test',
        mailto => ['ops@example.test'], 'oauth2-client-id' => 'rig-post',
        'oauth2-tenant-id' => '12345678-90ab-cdef-1234-567890abcdef',
        'oauth2-authorize-url' => "$r->{issuer}/auth", 'oauth2-token-url' => "$r->{issuer}/token",
        'oauth2-client-secret' => 'rig-secret',
    };
}

# The rig's browser stand-in logs in as $user and consents; returns (code, state).
sub login_and_consent {
    my ($user, $url) = @_;
    my $r = rig();
    open(my $fh, '-|', 'python3', "$ROOT/scripts/rig/oauth_driver.py", $r->{issuer}, 'browse', $user, $url, $REDIRECT)
        or die "cannot run oauth_driver.py: $!";
    my $final = do { local $/; <$fh> };
    close($fh) or die "oauth_driver.py failed\n";
    chomp $final;
    my %q = URI->new($final)->query_form;
    return ($q{code}, $q{state});
}

# Create Microsoft-style target $name for mailbox $from (with %extra keys) and authorize it at
# the rig: the browser stand-in logs in and consents, the code is exchanged with the PKCE
# verifier. Returns the refresh token.
sub authorize {
    my ($name, $from, %extra) = @_;
    require OxNotify::Core;
    my $r = rig();
    OxNotify::Core::create_target({ %{ ms_target_params($name, $from) }, %extra });
    my $a = OxNotify::Core::authorize_url({ name => $name, 'redirect-uri' => $REDIRECT });
    my ($code) = login_and_consent($from, $a->{url});
    return OxNotify::Core::exchange_smtp_oauth2_code({
        'auth-method' => 'microsoft-oauth2', 'client-id' => 'rig-post', 'client-secret' => 'rig-secret',
        'tenant-id' => '12345678-90ab-cdef-1234-567890abcdef', 'authorization-code' => $code,
        'redirect-uri' => $REDIRECT, 'pkce-verifier' => $a->{'pkce-verifier'},
        'token-url' => "$r->{issuer}/token", target => $name,
    })->{'refresh-token'};
}

# The delivered message whose Subject contains $needle (and whose text matches $also, if given:
# subjects of test mails repeat across runs that share the rig's Maildir).
sub find_mail {
    my ($needle, $also) = @_;
    my $dir = rig()->{maildir} . '/new';
    for (1 .. 50) {
        for my $f (glob("$dir/*")) {
            open(my $fh, '<', $f) or next;
            my $text = do { local $/; <$fh> };
            return $text if $text =~ /^Subject: .*\Q$needle\E/m && (!$also || $text =~ $also);
        }
        select(undef, undef, undef, 0.1);
    }
    return undef;
}

# How many delivered messages have $needle in their Subject.
sub mail_count {
    my ($needle) = @_;
    my $n = 0;
    for my $f (glob(rig()->{maildir} . '/new/*')) {
        open(my $fh, '<', $f) or next;
        $n++ if grep { /^Subject: .*\Q$needle\E/ } <$fh>;
    }
    return $n;
}

# True once more than $before messages with $needle in the Subject arrived (waits up to 5 s).
sub new_mail {
    my ($needle, $before) = @_;
    for (1 .. 50) {
        return 1 if mail_count($needle) > $before;
        select(undef, undef, undef, 0.1);
    }
    return 0;
}

sub state_of {
    my ($target) = @_;
    my $f = "$ENV{OXNOTIFY_STATE_DIR}/oauth2/$target.json";
    open(my $fh, '<', $f) or return undef;
    return Cpanel::JSON::XS->new->decode(do { local $/; <$fh> });
}

sub uniq { return "$_[0]-$$-" . int(rand(1e9)) }

1;
