package PVE::API2::OxNotify;

# Example (tested by perl/t/80-pve-stack.t): oxnotify's API inside a PVE-style stack, as a
# RESTHandler class of its own. Mount it in the stack's API tree, e.g. in PVE::API2::Cluster:
#
#     __PACKAGE__->register_method({ subclass => 'PVE::API2::OxNotify', path => 'oxnotify' });
#
# or register the methods next to the stack's own notification methods instead:
#
#     OxNotify::API2::Notifications::register('PVE::API2::Cluster::Notifications',
#         layout => 'beside-pve', errors => 'pve');

use strict;
use warnings;

use PVE::Cluster;
use PVE::RESTHandler;
use OxNotify::API2::Notifications;
use OxNotify::Core;

use base qw(PVE::RESTHandler);

# mailto-user: the stack's users, looked up in its user.cfg (as proxmox-notify's PVE context
# does). Registered once; OxNotify::Core calls it for each user a target sends to.
OxNotify::Core::set_user_email_resolver(sub {
    my ($userid) = @_;
    my $users = PVE::Cluster::cfs_read_file('user.cfg')->{users} // {};
    return $users->{$userid} ? $users->{$userid}{email} : undef;
});

# errors as PVE::Exception, so the HTTP server answers 400/403/404/409 instead of 500
OxNotify::API2::Notifications::register(__PACKAGE__, errors => 'pve');

1;

__END__

=head1 NAME

PVE::API2::OxNotify - example: oxnotify's API methods in a PVE-style stack

=head1 DESCRIPTION

A C<PVE::RESTHandler> class with every method of L<OxNotify::API2::Notifications>, errors as
C<PVE::Exception>, and the stack's user e-mail lookup registered for C<mailto-user>. See the
README, "Inside a PVE-style stack".

=cut
