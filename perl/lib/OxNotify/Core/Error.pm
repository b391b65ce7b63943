package OxNotify::Core::Error;

use strict;
use warnings;

use overload '""' => sub { $_[0]->{message} }, fallback => 1;

our $VERSION = '0.1.0';

sub new {
    my ($class, $message, $code) = @_;
    return bless { message => $message, code => $code // 500 }, $class;
}

sub message { $_[0]->{message} }
sub code { $_[0]->{code} }

1;

__END__

=head1 NAME

OxNotify::Core::Error - the exception thrown by OxNotify::Core

=head1 SYNOPSIS

    eval { OxNotify::Core::get_target({ name => 'nope' }) };
    if (my $err = $@) {
        warn "failed ($err->{code}): $err\n";   # stringifies to the message
    }

=head1 DESCRIPTION

An object with C<message> (secret-free, names the target and what to do) and C<code> (an
HTTP-style status: 400 bad input, 404 unknown target, 409 digest conflict, 500 internal, 502
token endpoint or SMTP server failure). It stringifies to the message, so C<die> output and
API-handler error mapping work unchanged.

=head1 METHODS

=over

=item new($message, $code)

=item message

=item code

=back

=cut
