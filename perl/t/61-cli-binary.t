# The `oxnotify` binary (crates/notify-cli) serves the plain `send` without starting Perl; its
# output, error lines and exit codes must be the Perl CLI's. Each case runs both ways (the binary,
# and bin/oxnotify-cli directly) and compares; and the binary hands every other command to Perl.
use strict;
use warnings;
use Test::More;
use IO::Socket::IP ();
use lib 'perl/t/lib';
use RigTest;
use OxNotify::Core;

need_rig();
my $dir = setup_dirs();
my $r = rig();
# a target that is down is queued after the caller's wait: keep it short
$ENV{OXNOTIFY_CALLER_WAIT} = 2;

my ($bin) = grep { -x } map { "target/$_/oxnotify" } qw(debug release);
need($bin, 'needs the oxnotify binary: cargo build -p notify-cli');

sub run_cmd {
    my (@cmd) = @_;
    my $err = "$dir/stderr";
    my $pid = open(my $fh, '-|') // die "fork: $!";
    if (!$pid) { open(STDERR, '>', $err) or die; exec { $cmd[0] } @cmd or die "exec: $!" }
    my $out = do { local $/; <$fh> };
    close $fh;
    my $rc = $? >> 8;
    open(my $e, '<', $err) or die;
    my $stderr = do { local $/; <$e> };
    # queued messages get fresh ids, and the outbox's ages move between the two runs
    s/QUEUED as \S+/QUEUED as ID/g for $out, $stderr;
    s/\b(oldest for|for) \d+ (s|min|h|d)\b/$1 AGE/g for $out, $stderr;
    return { rc => $rc, out => $out, err => $stderr };
}

my $closed = do { my $s = IO::Socket::IP->new(LocalHost => '127.0.0.1', LocalPort => 0, Listen => 1) or die; my $p = $s->sockport; close $s; $p };
my %base = (server => 'localhost', mode => 'starttls', 'auth-method' => 'plain', username => $r->{plain_user},
    'from-address' => $r->{plain_user}, mailto => ['ops@example.test']);
OxNotify::Core::create_target({ %base, name => 'up', port => $r->{smtp_starttls_port}, password => $r->{plain_password} });
OxNotify::Core::create_target({ %base, name => 'down', port => $closed, password => $r->{plain_password} });
OxNotify::Core::create_target({ %base, name => 'badpw', port => $r->{smtp_starttls_port}, password => 'wrong' });

my @cases = (
    [[qw(up --title), 'binary parity'], 0, qr/^up: sent$/m],
    [[qw(up --title=binary-eq --body=x=y --severity error)], 0, qr/^up: sent$/m],
    [[qw(down --title), 'binary parity queued'], 75, qr/^down: QUEUED as ID \(will be retried\)/m],
    [[qw(badpw --title), 'binary parity badpw'], 1, qr/^badpw: FAILED \(\d+, [a-z-]+\): /m],
    [[qw(up down --title), 'two'], 75, qr/^up: sent\ndown: QUEUED/m],
    [[qw(nosuch --title x)], undef, undef],
    [[qw(up --title x --severity loud)], undef, undef],
);
for my $c (@cases) {
    my ($args, $rc, $want) = @$c;
    my $fast = run_cmd($bin, 'send', @$args);
    my $perl = run_cmd($^X, 'bin/oxnotify-cli', 'send', @$args);
    is_deeply($fast, $perl, "send @$args: the binary answers as the Perl CLI (exit $perl->{rc})")
        or diag explain [$fast, $perl];
    is($fast->{rc}, $rc, "  exit $rc") if defined $rc;
    like($fast->{out}, $want, '  output') if $want;
    isnt($fast->{rc}, 0, '  an error exits non-zero') if !defined $rc;
}
ok(new_mail('binary-eq', 1), 'both sends of the --opt=value form arrived');

# everything else goes to the Perl CLI, with the same words
for my $args (['target', 'list'], ['send', 'up', '--title'], ['send', '--help'], ['frobnicate'],
    ['--output-format', 'json', 'send', 'up', '--title', 'json via perl']) {
    my $fast = run_cmd($bin, @$args);
    my $perl = run_cmd($^X, 'bin/oxnotify-cli', @$args);
    is_deeply($fast, $perl, "@$args: handed to the Perl CLI");
}
like(run_cmd($bin, 'send', '--help')->{out}, qr/^oxnotify send NAME/, 'send --help is the Perl help');

# no Perl in the plain send: the binary's process tree never runs perl (strace, if present)
SKIP: {
    skip 'strace not installed', 1 if system('command -v strace >/dev/null 2>&1') != 0;
    my $trace = "$dir/trace";
    system('strace', '-f', '-qq', '-e', 'trace=execve', '-o', $trace, $bin, 'send', 'up', '--title', 'no interpreter') == 0
        or die "strace run failed";
    open(my $t, '<', $trace) or die;
    my @exec = grep { /execve\(/ } <$t>;
    is(scalar(grep { /execve\("[^"]*perl/ } @exec), 0, 'a plain send runs no perl') or diag @exec;
}

done_testing();
