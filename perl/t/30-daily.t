# The daily job: rotation persisted, logging, warnings, exit codes, a second instance.
use strict;
use warnings;
use Test::More;
use lib 'perl/t/lib';
use RigTest;
use OxNotify::Core;

need_rig();
setup_dirs();


my $rt = authorize('daily', 'perl-daily@example.test');
my $out = `$^X bin/oxnotify-daily --no-syslog 2>&1`;
is($? >> 8, 0, 'daily job exits 0') or diag $out;
like($out, qr/target 'daily': rotated, refresh token expires about \d{4}-\d\d-\d\d/, 'one line per target');
my $state = state_of('daily');
isnt($state->{refresh_token}, $rt, 'rotated refresh token stored');
is($state->{rotations}, 1, 'one rotation');
unlike($out, qr/\Q$rt\E|\Q$state->{refresh_token}\E|rig-secret/, 'no secret in the log');

# a second target whose grant was revoked: the job reports it, warns, exits 1, keeps going
my $rt2 = authorize('revoked', 'perl-revoked@example.test');
system('python3', 'scripts/rig/oauth_driver.py', rig()->{issuer}, 'revoke', $rt2, 'rig-post', 'rig-secret') == 0
    or die 'revoke failed';
$out = `$^X bin/oxnotify-daily --no-syslog 2>&1`;
is($? >> 8, 1, 'exit 1 when a target failed') or diag $out;
like($out, qr/target 'revoked': needs-reauthorization - .*re-authorize the target/, 'clear re-authorize message');
like($out, qr/WARNING target 'revoked': re-authorize/, 'warning line');
like($out, qr/target 'daily': rotated/, 'the other target was still refreshed');
is(state_of('revoked')->{refresh_token}, $rt2, 'revoked target keeps its stored token');

# a second instance while the lock is held: waits, then exits cleanly without doing anything
my $pid = open(my $holder, '-|') // die;
if (!$pid) {
    require Fcntl;
    # another daily run holds the run lock
    open(my $lk, "+<", "$ENV{OXNOTIFY_STATE_DIR}/daily.lock") or die;
    flock($lk, Fcntl::LOCK_EX()) or die;
    # as the library's lock does: the holder's pid at offset 0, fixed width
    syswrite($lk, sprintf("%10d\n", $$)) // die;
    print "locked\n";
    sleep 8;
    exit 0;
}
my $l = <$holder>;
$out = `$^X bin/oxnotify-daily --no-syslog --lock-timeout 1 2>&1`;
is($? >> 8, 0, 'busy lock: exit 0') or diag $out;
like($out, qr/another instance of the daily refresh is running \(pid \d+ \(perl\)\), for \d+ s/,
    'says so, who holds it and since when') or diag $out;
# a holder that has held it for hours is stuck: the job says so and fails, every day
utime(time - 7200, time - 7200, "$ENV{OXNOTIFY_STATE_DIR}/daily.lock") or die;
$out = `$^X bin/oxnotify-daily --no-syslog --lock-timeout 1 2>&1`;
is($? >> 8, 1, 'a lock held for hours: exit 1') or diag $out;
like($out, qr/held by another instance \(pid \d+ \(perl\)\), for 7\d{3} s, longer than any run takes: it is stuck/,
    'names the stuck holder') or diag $out;
close($holder);

# a malformed line outside any target (and a foreign section with a broken line): every valid
# target is still refreshed, and the job names file and line without the line's text
{
    my $cfg = "$ENV{OXNOTIFY_CONFIG_DIR}/notifications.cfg";
    open(my $in, '<', $cfg) or die; my $text = do { local $/; <$in> }; close($in);
    open(my $fh, '>', $cfg) or die;
    print $fh "garbage-outside-any-section s3cr3t-looking-value\n\nmatcher: m1\n\tnot-a-key-value-line\n\n$text";
    close($fh) or die;
    $out = `$^X bin/oxnotify-daily --no-syslog 2>&1`;
    like($out, qr/WARNING config: .*notifications\.cfg line 1/, 'the stray line is reported with file and line')
        or diag $out;
    unlike($out, qr/s3cr3t-looking-value/, '... without its text');
    like($out, qr/target 'daily': rotated/, 'the valid target is still refreshed') or diag $out;
    open($fh, '>', $cfg) or die; print $fh $text; close($fh) or die;
}
done_testing();
