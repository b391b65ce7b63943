package PVE::Cluster;

# STAND-IN for pve-cluster's PVE::Cluster (a Proxmox-only binding to the cluster filesystem).
# The real RPCEnvironment only `use`s it on the tested path (init_request calls cfs_update and
# reads user.cfg); the test sets the user.cfg it answers with (%USER_CFG: users and their
# e-mail addresses, what the example's mailto-user resolver reads).

use strict;
use warnings;

our $USER_CFG = { users => {} };

sub cfs_update { return }
sub cfs_file_version { return '1' }

sub cfs_read_file {
    my ($file) = @_;
    return $USER_CFG if $file eq 'user.cfg';
    die "stand-in PVE::Cluster: no file '$file'\n";
}

sub log_msg { return }
sub broadcast_tasklist { return }

1;
