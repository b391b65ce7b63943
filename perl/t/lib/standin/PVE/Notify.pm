package PVE::Notify;

# STAND-IN for pve-manager's PVE::Notify (wraps proxmox-notify's Rust binding). Only needed so
# that the real PVE::API2::Cluster::Notifications compiles; its methods are registered and
# resolved by the test, never run.

use strict;
use warnings;

sub read_config { die "stand-in PVE::Notify: the stack's own notification config is not available here\n" }
sub lock_config { die "stand-in PVE::Notify: the stack's own notification config is not available here\n" }

1;
