package OxNotify::CLI::Relay;

use strict;
use warnings;

use Digest::SHA ();
use File::Temp ();

use OxNotify::Core::Error;

our $VERSION = '0.1.0';

# The Postfix keys setup-postfix sets; undo-postfix puts back what was there before.
our @POSTFIX_KEYS = qw(relayhost smtp_sasl_auth_enable smtp_sasl_password_maps smtp_sasl_security_options);

sub _die { die OxNotify::Core::Error->new($_[0], $_[1] // 400) }

sub _paths {
    my ($p) = @_;
    my $etc = $ENV{OXNOTIFY_CONFIG_DIR} // '/etc/oxnotify';
    my $pf = $p->{'postfix-config'} // '/etc/postfix';
    return (
        conf => $ENV{OXNOTIFY_RELAY_CONF} // "$etc/relay.conf",
        saved => "$etc/relay-postfix-before.conf",
        pfdir => $pf,
        map => "$pf/sasl_passwd_oxnotify_relay",
    );
}

sub _write_private {
    my ($path, $text) = @_;
    my ($dir) = $path =~ m{^(.*)/[^/]+$};
    my $tmp = File::Temp->new(DIR => $dir, UNLINK => 1);
    chmod(0600, $tmp->filename) or _die("chmod $tmp: $!", 500);
    print $tmp $text;
    close($tmp) or _die("write $path: $!", 500);
    rename($tmp->filename, $path) or _die("rename to $path: $!", 500);
    $tmp->unlink_on_destroy(0);
}

sub _slurp { open(my $fh, '<', $_[0]) or return undef; local $/; return scalar <$fh> }

sub _postconf {
    my ($pfdir, @args) = @_;
    system('postconf', '-c', $pfdir, @args) == 0 or _die("postconf @args failed", 500);
}

sub _postconf_get {
    my ($pfdir, $key) = @_;
    # -n: only what main.cf sets (undef: not set there, the default applies)
    open(my $fh, '-|', 'postconf', '-c', $pfdir, '-n', $key) or _die("postconf: $!", 500);
    my $line = <$fh>;
    close($fh);
    return undef if !defined $line;
    chomp $line;
    return $line =~ /^\Q$key\E = ?(.*)$/ ? $1 : undef;
}

sub _reload {
    my ($pfdir) = @_;
    # reload only a running Postfix; a stopped one reads main.cf when it starts
    system("postfix -c '$pfdir' status >/dev/null 2>&1") == 0 or return;
    system("postfix -c '$pfdir' reload >/dev/null 2>&1") == 0 or _die('postfix reload failed', 500);
}

# oxnotify relay setup-postfix: a fresh client credential for the relay (relay.conf keeps its
# SHA-256, Postfix's password map the password, both root-only), the four Postfix keys, the
# old values of those keys saved for undo-postfix, Postfix reloaded.
sub setup_postfix {
    my ($p) = @_;
    my %f = _paths($p);
    my $port = $p->{port} // 10587;
    _die("--port must be a port number") if $port !~ /^\d+$/ || $port < 1 || $port > 65535;
    _die("$f{pfdir}/main.cf not found: is Postfix installed?", 404) if !-f "$f{pfdir}/main.cf";
    open(my $rnd, '<:raw', '/dev/urandom') or _die("/dev/urandom: $!", 500);
    read($rnd, my $bytes, 24) == 24 or _die('/dev/urandom: short read', 500);
    close($rnd);
    my $password = unpack('H*', $bytes);
    # relay.conf: keep the admin's other lines, replace ours
    my %set = (
        listen => "127.0.0.1:$port",
        'client-user' => 'postfix',
        'client-password-sha256' => Digest::SHA::sha256_hex($password),
        (defined $p->{'default-target'} ? ('default-target' => $p->{'default-target'}) : ()),
        (defined $p->{'rewrite-from'} ? ('rewrite-from' => $p->{'rewrite-from'}) : ()),
    );
    my @lines = grep { my ($k) = /^\s*([a-z0-9-]+)\s*=/; !($k && exists $set{$k}) } split(/\n/, _slurp($f{conf}) // '');
    _write_private($f{conf}, join("\n", @lines, map { "$_ = $set{$_}" } sort keys %set) . "\n");
    # the old Postfix values, once (a second setup keeps the first saved state)
    if (!-e $f{saved}) {
        my $saved = join('', map {
            my $v = _postconf_get($f{pfdir}, $_);
            defined $v ? "$_ = $v\n" : "$_ !\n";
        } @POSTFIX_KEYS);
        _write_private($f{saved}, $saved);
    }
    _write_private($f{map}, "[127.0.0.1]:$port postfix:$password\n");
    system('postmap', '-c', $f{pfdir}, "hash:$f{map}") == 0 or _die("postmap hash:$f{map} failed", 500);
    chmod(0600, "$f{map}.db");
    _postconf($f{pfdir}, '-e',
        "relayhost = [127.0.0.1]:$port",
        'smtp_sasl_auth_enable = yes',
        "smtp_sasl_password_maps = hash:$f{map}",
        # plaintext SASL, but only ever to the relay on loopback (relayhost above)
        'smtp_sasl_security_options = noanonymous');
    _reload($f{pfdir});
    return { relayhost => "[127.0.0.1]:$port", 'relay-conf' => $f{conf}, 'password-map' => $f{map},
        'restart' => 'systemctl restart oxnotify-relay.socket oxnotify-relay.service' };
}

# oxnotify relay undo-postfix: the four keys as they were before setup-postfix, the password
# map removed, Postfix reloaded. relay.conf stays (the relay then has no client).
sub undo_postfix {
    my ($p) = @_;
    my %f = _paths($p);
    my $saved = _slurp($f{saved}) // _die("$f{saved} not found: setup-postfix was not run (or was undone)", 404);
    for my $line (split(/\n/, $saved)) {
        if ($line =~ /^(\w+) = (.*)$/) { _postconf($f{pfdir}, '-e', "$1 = $2") }
        elsif ($line =~ /^(\w+) !$/) { _postconf($f{pfdir}, '-X', $1) }
    }
    unlink($f{map}, "$f{map}.db");
    unlink($f{saved});
    _reload($f{pfdir});
    return { restored => [@POSTFIX_KEYS] };
}

# The commands for OxNotify::CLI's table.
sub commands {
    my %pf = ('postfix-config' => { type => 'string' });
    return (
        'relay setup-postfix' => {
            run => \&setup_postfix,
            options => { %pf, port => { type => 'integer' }, 'default-target' => { type => 'string' },
                'rewrite-from' => { type => 'string' } },
            print => sub {
                print "Postfix now relays through oxnotify-relay at $_[0]{relayhost}\n",
                    "(client credential in $_[0]{'password-map'} and $_[0]{'relay-conf'});\n",
                    "start the relay: $_[0]{restart}\n";
            },
            help => <<~'EOF',
                oxnotify relay setup-postfix [--port PORT] [--default-target NAME] [--rewrite-from NAMES] [--postfix-config DIR]
                  Make Postfix send all mail through oxnotify-relay on 127.0.0.1:PORT (default
                  10587): a new random client credential (its SHA-256 in relay.conf, the password in
                  a root-only Postfix map), relayhost and SASL set with postconf, the old values
                  saved for `oxnotify relay undo-postfix`, Postfix reloaded.
                EOF
        },
        'relay undo-postfix' => {
            run => \&undo_postfix,
            options => {%pf},
            print => sub { print "Postfix settings restored: @{ $_[0]{restored} }\n" },
            help => <<~'EOF',
                oxnotify relay undo-postfix [--postfix-config DIR]
                  Put back the Postfix settings setup-postfix changed, remove its password map,
                  reload Postfix.
                EOF
        },
    );
}

1;

__END__

=head1 NAME

OxNotify::CLI::Relay - C<oxnotify relay setup-postfix> and C<undo-postfix>

=head1 DESCRIPTION

Points the host's Postfix at C<oxnotify-relay> (C<relayhost = [127.0.0.1]:PORT>, SASL PLAIN
with a random client credential that is no provider secret) and undoes it. The relay keeps only
the credential's SHA-256 (C</etc/oxnotify/relay.conf>); Postfix keeps the password in a
root-only hash map. See L<oxnotify-relay(8)>.

=head1 FUNCTIONS

=over

=item setup_postfix(\%params)

Writes relay.conf and the password map, saves the old values of C<@POSTFIX_KEYS>, sets them
with C<postconf -e>, reloads Postfix. Parameters: C<port>, C<default-target>, C<rewrite-from>,
C<postfix-config> (default C</etc/postfix>).

=item undo_postfix(\%params)

Restores the saved values (or removes keys that were unset), removes the map, reloads Postfix.

=item commands()

The two command descriptors for L<OxNotify::CLI>'s table.

=back

=cut
