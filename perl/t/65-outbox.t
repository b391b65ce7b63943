# The outbox through the Perl API, the CLI and the daily job, against the rig's Dovecot: a send
# that cannot reach the server within the deadline is queued (ok + queued, CLI exit 75), listed,
# flushed over one session once the server is reachable, dropped by the admin, given up when too
# old (with a log line and a status warning); a burst goes out in one call.
use strict;
use warnings;
use Test::More;
use Cpanel::JSON::XS ();
use IO::Socket::IP ();
use lib 'perl/t/lib';
use RigTest;
use OxNotify::Core;
use OxNotify::Daily;

need_rig();
setup_dirs();
my $r = rig();
my $J = Cpanel::JSON::XS->new;
$ENV{OXNOTIFY_DELIVERY_DEADLINE} = 2;    # a closed port is given up on quickly

sub cli {
    my $out = `$^X bin/oxnotify @_ 2>&1`;
    return ($? >> 8, $out);
}

# a port nobody listens on: the "server is down"
my $closed = do { my $s = IO::Socket::IP->new(LocalHost => '127.0.0.1', LocalPort => 0, Listen => 1) or die; my $p = $s->sockport; close $s; $p };

OxNotify::Core::create_target({
    name => 'ob', server => 'localhost', port => $closed, mode => 'starttls', 'auth-method' => 'plain',
    username => $r->{plain_user}, password => $r->{plain_password}, 'from-address' => $r->{plain_user},
    mailto => ['ops@example.test'], 'max-connections' => 2,
});
is(OxNotify::Core::get_target({ name => 'ob' })->{'max-connections'}, 2, 'max-connections is stored');
eval { OxNotify::Core::update_target({ name => 'ob', 'max-connections' => 0 }) };
like($@, qr/max-connections/, 'max-connections 0 is refused');

my $tag = uniq('outbox');
my $res = OxNotify::Core::send({ targets => ['ob'], title => "$tag one", body => 'x' });
is(scalar @$res, 1, 'one result');
ok($res->[0]{ok} && $res->[0]{queued}, 'server down: ok, and queued') or diag explain $res;
like($res->[0]{id} // '', qr/^\d+-\d+-\d+$/, 'the outbox id');
like($res->[0]{message}, qr/connect/, 'says why');

my ($rc, $out) = cli('send ob', '--title', "'$tag two'");
is($rc, 75, 'CLI send: exit 75 when queued') or diag $out;
like($out, qr/^ob: QUEUED as \S+ \(will be retried\)/m, 'CLI says queued');

($rc, $out) = cli('--output-format json outbox list');
is($rc, 0, 'outbox list');
my $list = $J->decode($out);
is(scalar @$list, 2, 'two waiting');
is($list->[0]{title}, "$tag one", 'oldest first');
unlike($out, qr/\Q$r->{plain_password}\E/, 'no secret in the listing');
my $st = OxNotify::Core::outbox_status({ name => 'ob' });
is($st->{queued}, 2, 'status: queue depth');
like($st->{warning}, qr/2 message\(s\) waiting/, 'status: warning');
my ($view) = grep { $_->{name} eq 'ob' } @{ OxNotify::Core::list_targets() };
is($view->{'outbox-queued'}, 2, 'the target list (and the page) shows the queue depth');
ok(defined $view->{'outbox-oldest-age'}, '... and the oldest age');
like($view->{warning}, qr/waiting in the outbox/, '... and the warning');
($rc, $out) = cli('status');
is($rc, 1, 'CLI status: exit 1 while messages wait');
like($out, qr/^ob \(plain\):\n  outbox: +2 queued, oldest \d+ s\n  WARNING: .*2 message\(s\) waiting/m,
    'CLI status lists the plain target with its outbox') or diag $out;

# the server is reachable again (here: the admin fixed the port); one flush, one session
OxNotify::Core::update_target({ name => 'ob', port => $r->{smtp_starttls_port}, password => $r->{plain_password} });   # a new endpoint needs its secret again
($rc, $out) = cli('outbox flush');
is($rc, 0, 'flush: exit 0') or diag $out;
like($out, qr/outbox of target 'ob': 2 delivered in 1 session\(s\)/, 'flush: two delivered in one session');
ok(find_mail("$tag one") && find_mail("$tag two"), 'both arrived');
is(scalar @{ OxNotify::Core::outbox_list({}) }, 0, 'spool empty');

# a burst: one call, one session
my $b = OxNotify::Core::send_burst({ target => 'ob',
    notifications => [map { { title => "$tag burst $_", body => "n $_" } } 1 .. 3] });
is(scalar(grep { $_->{ok} && !$_->{queued} } @$b), 3, 'burst: three sent');
ok(find_mail("$tag burst 3"), 'burst arrived');

# drop
OxNotify::Core::update_target({ name => 'ob', port => $closed, password => $r->{plain_password} });
$res = OxNotify::Core::send({ targets => ['ob'], title => "$tag dropme" });
ok($res->[0]{queued}, 'queued again');
($rc, $out) = cli('outbox drop', $res->[0]{id});
is($rc, 0, 'drop') or diag $out;
like($out, qr/dropped \Q$res->[0]{id}\E \('\Q$tag\E dropme'\)/, 'drop says what');
($rc, $out) = cli('outbox drop 123-45-6');
is($rc, 2, 'drop of an unknown id: exit 2');
is(OxNotify::Core::outbox_status({ name => 'ob' })->{given_up}{count}, 1, 'the drop is recorded');

# too old: the daily job gives it up with a log line; the status warns
OxNotify::Core::send({ targets => ['ob'], title => "$tag stale" });
$ENV{OXNOTIFY_OUTBOX_MAX_AGE} = 1;
sleep 2;
my $report = OxNotify::Daily::refresh();
my @gave = grep { $_->[1] =~ /GAVE UP .*\Q$tag\E stale/ } @{ $report->{lines} };
is(scalar @gave, 1, 'daily job: one GAVE UP line') or diag explain $report->{lines};
is($gave[0][0], 'err', '... at level err');
is($report->{exit_code}, 1, 'daily job exit 1 after giving a message up');
$st = OxNotify::Core::outbox_status({ name => 'ob' });
is($st->{queued}, 0, 'nothing left');
like($st->{warning}, qr/given up so far.*\Q$tag\E stale/, 'status warns about the message given up');
delete $ENV{OXNOTIFY_OUTBOX_MAX_AGE};

# a permanent failure is not queued
OxNotify::Core::update_target({ name => 'ob', port => $r->{smtp_starttls_port}, username => 'nobody@example.test', password => 'wrong' });
$res = OxNotify::Core::send({ targets => ['ob'], title => "$tag badauth" });
ok(!$res->[0]{ok} && !$res->[0]{queued}, 'wrong login: failed, not queued') or diag explain $res;
is(scalar @{ OxNotify::Core::outbox_list({}) }, 0, 'nothing queued');

# a queued message is not dropped because the login is wrong now: it waits for the admin's fix
OxNotify::Core::update_target({ name => 'ob', port => $closed, username => $r->{plain_user}, password => $r->{plain_password} });
$res = OxNotify::Core::send({ targets => ['ob'], title => "$tag waits" });
ok($res->[0]{queued}, 'queued while the server is down');
OxNotify::Core::update_target({ name => 'ob', port => $r->{smtp_starttls_port}, password => 'wrong' });
($rc, $out) = cli('outbox flush');
is($rc, 75, 'flush with a rejected login: exit 75 (still queued)') or diag $out;
like($out, qr/1 still queued - .*authentication failed \(permanent\)/, 'says why') or diag $out;
is(scalar @{ OxNotify::Core::outbox_list({}) }, 1, 'the message is kept');
OxNotify::Core::update_target({ name => 'ob', password => $r->{plain_password} });
($rc, $out) = cli('outbox flush');
is($rc, 0, 'fixed: flushed') or diag $out;
ok(find_mail("$tag waits"), 'and delivered');

done_testing();
