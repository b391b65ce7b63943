# The systemd units are hardened: `systemd-analyze security --offline=yes` rates each at an
# exposure of at most 4.5 (it was 9.0 "UNSAFE"), and they may write only oxnotify's directories.
use strict;
use warnings;
use Test::More;
use lib 'perl/t/lib';
use RigTest;

my $analyze = '/usr/bin/systemd-analyze';
need(-x $analyze, "needs $analyze (package systemd)");

# the broker and the relay only write the state (refreshed tokens; the relay also slots and outbox)
my %writes = ('oxnotify-broker' => '/var/lib/oxnotify', 'oxnotify-relay' => '/var/lib/oxnotify');
for my $unit (qw(oxnotify-daily oxnotify-outbox oxnotify-server oxnotify-broker oxnotify-relay)) {
    my $file = "debian/oxnotify.$unit.service";
    my $out = `$analyze security --offline=yes $file 2>&1`;
    my ($score) = $out =~ /Overall exposure level for \S+: (\d+(?:\.\d+)?)/;
    ok(defined $score, "$unit: systemd-analyze rates it") or diag $out;
    cmp_ok($score // 99, '<=', 4.5, "$unit: exposure $score <= 4.5") or diag $out;
    open(my $fh, '<', $file) or die "$file: $!";
    my $text = do { local $/; <$fh> };
    is_deeply([$text =~ /^ReadWritePaths=(.*)$/mg], [$writes{$unit} // '/etc/oxnotify /var/lib/oxnotify'], "$unit: writes only our directories");
    like($text, qr/^CapabilityBoundingSet=$/m, "$unit: no capabilities");
    like($text, qr/^ProtectSystem=strict$/m, "$unit: the rest of the system is read-only");
}

# the broker's peer check needs the real UIDs: no user namespace
my $broker = do { local (@ARGV, $/) = 'debian/oxnotify.oxnotify-broker.service'; <> };
unlike($broker, qr/^PrivateUsers=yes/m, 'oxnotify-broker: no PrivateUsers (SO_PEERCRED would map other users to nobody)');
my $socket = do { local (@ARGV, $/) = 'debian/oxnotify.oxnotify-broker.socket'; <> };
like($socket, qr{^ListenStream=/run/oxnotify/broker\.sock$}m, 'broker socket at /run/oxnotify/broker.sock');
done_testing();
