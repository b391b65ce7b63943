# oxnotify-server as a process: no side effects outside serving, where tokens are (never what),
# default listen address, concurrent requests (one slow send does not block others), per-client
# connection bound, refusal of insecure token files. Needs no rig: the slow SMTP peer is a fake.
use strict;
use warnings;
use File::Temp ();
use Test::More;
use HTTP::Tiny ();
use IO::Socket::IP ();
use POSIX ();
use lib 'perl/t/lib';
use RigTest;
use OxNotify::Server;
use OxNotify::Server::Tokens;

my $dir = setup_dirs();

# help, version, routes: no token files, no directories
for my $cmd ('--help', 'version', 'routes') {
    my $out = `$^X bin/oxnotify-server $cmd 2>&1`;
    is($? >> 8, 0, "oxnotify-server $cmd: exit 0");
    ok(!-e $ENV{OXNOTIFY_CONFIG_DIR}, "oxnotify-server $cmd: creates nothing");
}
unlike(`$^X bin/oxnotify-server --help 2>&1`, qr/oxn_/, 'no token printed');

is_deeply(OxNotify::Server::serve_options('daemon')->{listen}, ['http://127.0.0.1:8765'], 'daemon without -l: 127.0.0.1:8765');
is_deeply(OxNotify::Server::serve_options()->{listen}, ['http://127.0.0.1:8765'], 'no arguments: the same');
is_deeply(OxNotify::Server::serve_options('daemon', '-l', 'http://127.0.0.1:9')->{listen}, ['http://127.0.0.1:9'], '-l wins');
ok(!OxNotify::Server::serves('routes') && OxNotify::Server::serves('daemon'), 'only daemon/prefork serve');
{
    local $SIG{__WARN__} = sub { };    # Getopt::Long's own "Unknown option" line
    is(OxNotify::Server::serve_options('daemon', '--frobnicate'), undef, 'unknown option: usage error');
}

sub free_port { IO::Socket::IP->new(LocalHost => '127.0.0.1', LocalPort => 0, Listen => 1)->sockport }

my %EXITED;    # exit codes of servers that ended while starting

# Start the server; returns (pid, port, log file).
sub start_server {
    my (@opts) = @_;
    my $port = free_port();
    my $log = "$dir/server-$port.log";
    my $pid = fork() // die;
    if (!$pid) {
        open(STDOUT, '>', $log); open(STDERR, '>&', \*STDOUT); open(STDIN, '<', '/dev/null');
        exec($^X, 'bin/oxnotify-server', 'daemon', '-l', "http://127.0.0.1:$port", @opts) or die;
    }
    for (1 .. 100) {
        last if IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $port);
        if (waitpid($pid, POSIX::WNOHANG()) == $pid) { $EXITED{$pid} = $? >> 8; last }
        select(undef, undef, undef, 0.1);
    }
    return ($pid, $port, $log);
}
sub stop_server { kill('TERM', $_[0]); waitpid($_[0], 0) }
sub slurp { open(my $fh, '<', $_[0]) or return ''; local $/; <$fh> }

my ($pid, $port, $log) = start_server();
my $admin_file = OxNotify::Server::Tokens::token_file('admin');
my $admin = slurp($admin_file) =~ s/\s+\z//r;
ok(length($admin) >= 32, 'admin token created on first start');
like(slurp($log), qr/created the admin API token in \Q$admin_file\E/, 'the log says where the token is');
unlike(slurp($log), qr/\Q$admin\E/, 'and never the token');

my $base = "http://127.0.0.1:$port/api2/json";
my $auth = { headers => { Authorization => "Bearer $admin" } };
# no keep-alive: a kept connection stays with the worker that served it, which may be the
# one blocked in the slow send
my $http = HTTP::Tiny->new(timeout => 30, keep_alive => 0);

# FaultInjectingSilentSmtp: accepts the connection and never greets, so a send through it
# blocks the worker that handles it until we let go
my $silent = IO::Socket::IP->new(LocalHost => '127.0.0.1', LocalPort => 0, Listen => 5) or die;
my $res = $http->post("$base/endpoints/smtp", { %$auth, headers => { %{ $auth->{headers} }, 'Content-Type' => 'application/json' },
    content => qq({"name":"slow","server":"127.0.0.1","port":@{[ $silent->sockport ]},"mode":"insecure","auth-method":"none",)
             . qq("from-address":"a\@example.test","mailto":["b\@example.test"]}) });
is($res->{status}, 200, 'slow target created') or diag $res->{content};

pipe(my $r, my $w) or die;
my $slow = fork() // die;
if (!$slow) {
    close($r);
    my $res = HTTP::Tiny->new(timeout => 300)->post("$base/targets/slow/test", $auth);
    syswrite($w, "$res->{status}\n");
    POSIX::_exit(0);
}
close($w);
my $held = eval {
    local $SIG{ALRM} = sub { die "the send never reached the SMTP peer\n" };
    alarm 60;
    my $c = $silent->accept;
    alarm 0;
    $c;
};
ok($held, 'a send is in progress (the SMTP peer has the connection)') or diag $@;
$res = $http->get("$base/endpoints/smtp", $auth);
is($res->{status}, 200, 'another request is answered meanwhile');
is(waitpid($slow, POSIX::WNOHANG()), 0, '... while the slow send is still running');
# a slow client (half a request) does not hold the server either
my $half = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $port) or die;
print {$half} "GET /api2/json/targets HTTP/1.1\r\nHost: x\r\n";
is($http->get("$base/targets", $auth)->{status}, 200, 'a half-sent request does not block others');
close($held) if $held;
my $slow_status = <$r>;
waitpid($slow, 0);
like($slow_status // '', qr/^5\d\d$/, 'the slow send fails once the peer lets go');
stop_server($pid);

# at most 8 connections per client address and worker
($pid, $port, $log) = start_server('-w', 1);
my @conns;
my $last = '';
for my $n (1 .. 9) {
    my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $port) or die;
    print {$s} "GET /api2/json/targets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $admin\r\n\r\n";
    my $head = '';
    while (defined(my $l = <$s>)) { $head .= $l; last if $l eq "\r\n" }
    my ($len) = $head =~ /^Content-Length: (\d+)/mi;
    read($s, my $body, $len // 0);
    $last = $head . $body;
    push @conns, $s;
    last if $n < 9 && $head !~ /^HTTP\/1\.1 200/ && fail("connection $n refused: $head");
}
like($last, qr/^HTTP\/1\.1 503/, 'the 9th open connection from one address is turned away');
like($last, qr/too many connections from 127\.0\.0\.1 uid 0/, '... saying why (and whose)');
close($_) for @conns;
# every local user comes from 127.0.0.1: another user's idle connections (nobody's, here) do
# not turn root away
{
    my $hold = fork() // die;
    if (!$hold) {
        POSIX::setgid(65534); POSIX::setuid(65534) or POSIX::_exit(1);
        my @mine = map { IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $port) } 1 .. 8;
        for my $s (@mine) {
            print {$s} "GET /api2/json/targets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $admin\r\n\r\n";
            my $l = <$s>;    # served: the connection is now counted, and kept open
        }
        sleep 10;
        POSIX::_exit(0);
    }
    sleep 3;
    my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $port) or die;
    print {$s} "GET /api2/json/targets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $admin\r\nConnection: close\r\n\r\n";
    my $status = <$s> // '';
    like($status, qr/^HTTP\/1\.1 200/, "another user's 8 connections do not turn root away");
    kill('KILL', $hold);
    waitpid($hold, 0);
}
stop_server($pid);

# Prefork's default PID file is $TMPDIR/prefork.pid: a local user's symlink there (to a file
# that does not exist yet, say in /etc/cron.d) must not make the root server create it
{
    my $tmp = File::Temp::tempdir(CLEANUP => 1);
    my $victim = "$tmp/created-through-the-link";
    symlink($victim, "$tmp/prefork.pid") or die;
    local $ENV{TMPDIR} = $tmp;
    ($pid, $port, $log) = start_server();
    ok(!exists $EXITED{$pid}, 'server with a planted prefork.pid symlink runs') or diag slurp($log);
    sleep 2;    # the manager writes its PID file in its first rounds
    stop_server($pid);
    ok(!-e $victim, 'nothing was created through the symlink');
    ok(-l "$tmp/prefork.pid", 'the planted link is left as it was');
}

# an insecure token file: the server does not start
chmod(0644, $admin_file);
($pid, $port, $log) = start_server();
waitpid($pid, 0) if !exists $EXITED{$pid};
is($EXITED{$pid} // $? >> 8, 2, 'world-readable token file: exit 2');
like(slurp($log), qr/not starting: \Q$admin_file\E is accessible to group or others.*chmod 600/, 'names the file and the fix');
done_testing();
