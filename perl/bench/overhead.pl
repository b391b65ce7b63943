#!/usr/bin/perl
# overhead.pl — cost of the Perl binding: per-call overhead of a no-op call (selftest with an
# empty hash: JSON encode, FFI call, JSON parse in Rust, answer, free, decode), a call that
# reads the config (list_targets on an empty config), module load time, and process memory.
use strict;
use warnings;
use FindBin ();
use lib "$FindBin::RealBin/../lib";
use File::Temp ();
use Time::HiRes qw(time);

my $N = shift // 100_000;
my $dir = File::Temp::tempdir(CLEANUP => 1);
$ENV{OXNOTIFY_CONFIG_DIR} = "$dir/etc";
$ENV{OXNOTIFY_STATE_DIR} = "$dir/var";

sub rss_kib { open(my $f, '<', '/proc/self/status') or return 0; (map { /^VmRSS:\s+(\d+)/ ? $1 : () } <$f>)[0] }

my $rss0 = rss_kib();
my $t0 = time;
require OxNotify::Core;
OxNotify::Core::abi_version();    # loads the .so
my $load = time - $t0;
my $rss1 = rss_kib();

sub median_us {
    my ($n, $sub) = @_;
    my @t;
    for (1 .. $n) { my $s = time; $sub->(); push @t, time - $s }
    @t = sort { $a <=> $b } @t;
    return ($t[$#t / 2] * 1e6, $t[int($#t * 0.99)] * 1e6);
}
my ($sm, $s99) = median_us($N, sub { OxNotify::Core::selftest({}) });
my ($lm, $l99) = median_us($N / 10, sub { OxNotify::Core::list_targets() });
printf "module load + library open: %.1f ms\n", $load * 1000;
printf "no-op call (selftest {}):   median %.2f us, p99 %.2f us over %d calls\n", $sm, $s99, $N;
printf "list_targets (empty cfg):   median %.2f us, p99 %.2f us over %d calls\n", $lm, $l99, $N / 10;
printf "RSS: perl alone %d KiB, with module + library loaded %d KiB, after the calls %d KiB\n", $rss0, $rss1, rss_kib();
