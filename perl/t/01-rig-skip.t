# Without the rig, a plain `prove -Iperl/lib perl/t` runs what needs no rig and names what it
# skipped; with OXNOTIFY_REQUIRE_RIG=1 (the full suite) a missing rig is a failure.
use strict;
use warnings;
use Test::More;

my %env = map { $_ => $ENV{$_} } grep { !/^RIG_/ && $_ ne 'OXNOTIFY_REQUIRE_RIG' } keys %ENV;

sub run_without_rig {
    my ($file, %extra) = @_;
    local %ENV = (%env, %extra);
    my $out = `$^X -Iperl/lib $file 2>&1`;
    return ($? >> 8, $out);
}

for my $file (qw(perl/t/20-flow.t perl/t/50-api.t perl/t/60-cli.t perl/t/70-browser.t)) {
    my ($rc, $out) = run_without_rig($file);
    is($rc, 0, "$file without the rig: exit 0");
    like($out, qr/^1\.\.0 # SKIP needs the test rig: RIG_\* variables not set/m, "$file: skipped, with the reason");
    ($rc, $out) = run_without_rig($file, OXNOTIFY_REQUIRE_RIG => 1);
    isnt($rc, 0, "$file without the rig but OXNOTIFY_REQUIRE_RIG=1: fails");
    like($out, qr/^Bail out!.*needs the test rig/m, "$file: says why");
}
done_testing();
