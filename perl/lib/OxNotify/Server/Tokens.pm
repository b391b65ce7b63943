package OxNotify::Server::Tokens;

use strict;
use warnings;

use Digest::SHA ();
use Fcntl ();
use OxNotify::Core::Error;

our $VERSION = '0.1.0';

our @ROLES = qw(admin audit);

sub _dir { ($ENV{OXNOTIFY_CONFIG_DIR} || '/etc/oxnotify') . '/priv' }

sub token_file { my ($role) = @_; return _dir() . "/api-token.$role" }

sub random_token {
    open(my $fh, '<:raw', '/dev/urandom') or die "cannot read /dev/urandom: $!\n";
    read($fh, my $bytes, 32) == 32 or die "short read from /dev/urandom\n";
    return 'oxn_' . unpack('H*', $bytes);
}

# Create the token files that do not exist yet (0600 in the 0700 priv dir); returns
# { role => token } for the ones created, so the caller can print them once.
sub ensure {
    my %created;
    my $dir = _dir();
    if (!-d $dir) {
        my $parent = $dir =~ s{/priv$}{}r;
        mkdir($parent, 0755) if !-d $parent;
        mkdir($dir, 0700) or die "cannot create $dir: $!\n";
    }
    chmod(0700, $dir);
    for my $role (@ROLES) {
        my $file = token_file($role);
        next if -e $file;
        my $token = random_token();
        sysopen(my $fh, $file, Fcntl::O_WRONLY() | Fcntl::O_CREAT() | Fcntl::O_EXCL(), 0600)
            or die "cannot create $file: $!\n";
        print {$fh} "$token\n";
        close($fh) or die "cannot write $file: $!\n";
        $created{$role} = $token;
    }
    return \%created;
}

our $MIN_LENGTH = 32;

# Why a token file must not be used (readable by others, too short), or undef if it is fine.
sub problem {
    my ($file, $token) = @_;
    my @st = stat($file) or return "cannot read $file: $!";
    return sprintf("%s is accessible to group or others (mode %04o); run chmod 600 %s", $file, $st[2] & 07777, $file)
        if $st[2] & 077;
    return "$file holds a token shorter than $MIN_LENGTH characters; delete it and restart oxnotify-server for a new one"
        if defined $token && length($token) < $MIN_LENGTH;
    return undef;
}

sub _read {
    my ($file) = @_;
    open(my $fh, '<', $file) or return undef;
    my $t = <$fh> // '';
    chomp $t;
    return $t;
}

# Dies naming every token file that must not be used (the server refuses to start).
sub check {
    my @problems = grep { defined } map { my $f = token_file($_); -e $f ? problem($f, _read($f) // '') : () } @ROLES;
    die join("\n", @problems) . "\n" if @problems;
    return 1;
}

# The role of a presented token, or undef. Compares SHA-256 digests in constant time so
# neither the token nor its length leaks through timing. A token file readable by others
# or with a short token authenticates nobody.
sub role_of {
    my ($presented) = @_;
    return undef if !defined $presented || $presented eq '';
    my $p = Digest::SHA::sha256($presented);
    my $found;
    for my $role (@ROLES) {
        my $file = token_file($role);
        my $t = _read($file) // next;
        next if $t eq '' || defined problem($file, $t);
        my $diff = 0;
        my $s = Digest::SHA::sha256($t);
        $diff |= ord(substr($p, $_, 1)) ^ ord(substr($s, $_, 1)) for 0 .. 31;
        $found //= $role if $diff == 0;
    }
    return $found;
}

1;

__END__

=head1 NAME

OxNotify::Server::Tokens - the standalone server's API tokens

=head1 DESCRIPTION

Two roles: C<admin> (may do everything) and C<audit> (read only). Each has one bearer token
in C<$OXNOTIFY_CONFIG_DIR/priv/api-token.E<lt>roleE<gt>> (0600, directory 0700), generated on
first start (the server prints where, never the token). Delete a file and restart to rotate
that token. A file accessible to group or others, or a token shorter than 32 characters, is
refused: such a token authenticates nobody and the server does not start.

=head1 FUNCTIONS

=over

=item ensure() - create missing token files; returns the new tokens by role

=item role_of($token) - the role of a token (constant-time comparison), or undef

=item check() - dies naming every token file that must not be used

=item problem($file, $token) - why a token file must not be used, or undef

=item token_file($role)

=item random_token() - 32 random bytes, hex, with an oxn_ prefix

=back

=cut
