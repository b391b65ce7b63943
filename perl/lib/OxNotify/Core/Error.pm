package OxNotify::Core::Error;

use strict;
use warnings;

use overload '""' => sub { $_[0]->{message} }, fallback => 1;

our $VERSION = '0.1.0';

sub new {
    my ($class, $message, $code, %extra) = @_;
    my $self = bless { message => $message, code => $code // 500 }, $class;
    for my $k (qw(kind transient errors exit_code)) {
        $self->{$k} = $extra{$k} if defined $extra{$k};
    }
    return $self;
}

# From the library's error answer ({message, code, kind?, transient?, param?}).
sub from_answer {
    my ($class, $e) = @_;
    my $self = $class->new($e->{message}, $e->{code}, kind => $e->{kind}, exit_code => $e->{exit_code},
        (defined $e->{transient} ? (transient => $e->{transient} ? 1 : 0) : ()));
    # a 400 about one parameter: the core says which ("invalid parameter 'X': ..."), so a
    # host can show it next to the field like its own schema errors
    my ($param, $msg) = defined $e->{param} ? ($e->{param}, $e->{message})
        : ($e->{message} // '') =~ /^invalid parameter '([^']+)': (.*)\z/s;
    $self->{errors} = { $param => $msg } if ($e->{code} // 0) == 400 && defined $param;
    $self->{errors} = { %{ $e->{errors} } } if ref($e->{errors}) eq 'HASH' && %{ $e->{errors} };
    return $self;
}

sub message { $_[0]->{message} }
sub code { $_[0]->{code} }
sub kind { $_[0]->{kind} }
sub transient { $_[0]->{transient} }
sub errors { $_[0]->{errors} }

# The library sends the exit code of its error kind (the one map, shared with `oxnotify
# token`); an error raised in Perl before the library was asked is a usage error, unless its
# HTTP-style code says not found or a server-side failure.
sub exit_code {
    my ($self) = @_;
    return $self->{exit_code} if defined $self->{exit_code};
    my $code = $self->{code} // 500;
    return $code == 404 ? 4 : $code >= 500 ? 3 : 2;
}

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

C<kind> is the library's error kind where it sends one (C<invalid-input>, C<not-found>,
C<conflict>, C<needs-reauthorization>, C<needs-admin-fix>, C<transient>, C<internal>), else
undef; C<transient> says whether retrying later may help (undef when not sent). C<errors>
maps parameter names to messages for a 400 about specific parameters (schema validation, or
the core naming the parameter), the shape PVE's C<PVE::Exception> uses.

Inside a PVE-style stack the API descriptors raise C<PVE::Exception> instead (see
L<OxNotify::API2::Notifications/"Errors">); this class is what the library and the
standalone server use.

=head1 METHODS

=over

=item new($message, $code, %extra) - C<%extra>: C<kind>, C<transient>, C<errors>

=item from_answer(\%error) - from the library's error answer

=item message, code, kind, transient, errors, exit_code

=back

=cut
