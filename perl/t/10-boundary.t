# Bad input from Perl gives an exception with a code, never a crash; a Rust panic too.
use strict;
use warnings;
use Test::More;
use lib 'perl/t/lib';
use RigTest;
use OxNotify::Core;

setup_dirs();

sub dies_with {
    my ($code, $re, $name, $sub) = @_;
    my $ok = eval { $sub->(); 1 };
    my $err = $@;
    ok(!$ok, "$name: dies");
    isa_ok($err, 'OxNotify::Core::Error', $name) or return;
    is($err->code, $code, "$name: code $code");
    like("$err", $re, "$name: message");
}

dies_with(500, qr/panic/, 'rust panic', sub { OxNotify::Core::selftest({ panic => Cpanel::JSON::XS::true() }) });
is(OxNotify::Core::selftest({ x => 1 })->{x}, 1, 'library still works after a panic');

dies_with(404, qr/'nope' does not exist/, 'unknown target', sub { OxNotify::Core::get_target({ name => 'nope' }) });
dies_with(400, qr/missing field `name`/, 'missing parameter', sub { OxNotify::Core::get_target({}) });
dies_with(400, qr/invalid type/, 'wrong type', sub { OxNotify::Core::get_target({ name => [1, 2] }) });
dies_with(400, qr/invalid type: null|missing field/, 'undef value', sub { OxNotify::Core::get_target({ name => undef }) });
dies_with(400, qr/unknown field `colour`/, 'unknown parameter', sub { OxNotify::Core::target_status({ name => 'x', colour => 1 }) });
dies_with(400, qr/hash reference/, 'not a hash', sub { OxNotify::Core::get_target('m365') });
dies_with(400, qr/invalid target name/, 'name with a path', sub {
    OxNotify::Core::create_target({ %{ ms_target_params('x', 'a@example.test') }, name => '../../etc/passwd' });
});
dies_with(400, qr/invalid target name/, 'huge name', sub {
    OxNotify::Core::create_target({ %{ ms_target_params('x', 'a@example.test') }, name => 'a' x 1_000_000 });
});
# bytes that are not UTF-8 arrive as Latin-1 characters (JSON-encoded), never as broken input
dies_with(400, qr/invalid target name/, 'non-UTF-8 bytes in the name', sub {
    OxNotify::Core::create_target({ %{ ms_target_params("t\xff\xfe", 'a@example.test') } });
});
is(OxNotify::Core::selftest({ s => "\xff\xfe" })->{s}, "\xff\xfe", 'non-UTF-8 bytes round-trip as characters');
dies_with(400, qr/carriage return/, 'CRLF injection', sub {
    OxNotify::Core::create_target({ %{ ms_target_params('crlf', 'a@example.test') }, author => "x\r\nBcc: all\@example.test" });
});
dies_with(400, qr/title/, 'CRLF in the subject', sub {
    OxNotify::Core::send({ targets => ['x'], title => "hi\r\nBcc: x\@example.test" });
});
dies_with(400, qr/unknown parameter/, 'unknown config key', sub {
    OxNotify::Core::create_target({ %{ ms_target_params('kk', 'a@example.test') }, colour => 'blue' });
});
my $huge = 'x' x (4 * 1024 * 1024);
is(length(OxNotify::Core::selftest({ big => $huge })->{big}), length($huge), '4 MiB string round-trips');

ok(!-e "$ENV{OXNOTIFY_CONFIG_DIR}/notifications.cfg" || !-s _, 'rejected creates wrote nothing');
done_testing();
