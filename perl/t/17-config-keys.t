# The Perl side's key lists agree with the core's key table (OxNotify::Core::config_keys):
# the API parameters and their types, what is secret (never returned, asked for by the CLI),
# what can be deleted, where each key applies (conditions on choice keys and their values), and
# the web page's labels (its form is built from the table). Adding a key in Rust fails here until
# the Perl schema and the page's label follow.
use strict;
use warnings;
use Test::More;
use Mojo::File ();
use OxNotify::Core;
use OxNotify::API2::Notifications;

my @table = @{ OxNotify::Core::config_keys() };
ok(@table, 'the core has a key table');
for my $k (@table) {
    my $name = $k->{name} // '?';
    ok(defined $k->{$_}, "key '$name': $_") for qw(name kind);
    ok(exists $k->{$_}, "key '$name': $_") for qw(private multi deletable);
}
my %table = map { ($_->{name} => $_) } @table;

# Parameters of the API that are not config keys: the refresh token goes to the OAuth2 state.
my @NOT_CONFIG = grep { !$table{$_} } qw(oauth2-refresh-token);

my $create = OxNotify::API2::Notifications::method('create_smtp_endpoint')->{parameters}{properties};
my $update = OxNotify::API2::Notifications::method('update_smtp_endpoint')->{parameters}{properties};
my $view = OxNotify::API2::Notifications::method('get_smtp_endpoint')->{returns}{properties};
my @params = sort grep { $_ ne 'name' } keys %$create;
is_deeply([grep { !$table{$_} } @params], [sort @NOT_CONFIG], 'every create parameter is a config key (or the refresh token)');
is_deeply([sort grep { !$create->{$_} } keys %table], [], 'every config key is a create parameter');
is_deeply([sort grep { !$update->{$_} } keys %table], [], 'every config key is an update parameter');

my %secret = map { $_ => 1 } OxNotify::API2::Notifications::secret_keys();
is_deeply([sort keys %secret], [sort @NOT_CONFIG, map { $_->{name} } grep { $_->{private} } @table],
    'the secret parameters are the private keys and the refresh token');
is_deeply([sort grep { $view->{$_} } keys %secret], [], 'no secret is in what a GET returns');
is_deeply([sort grep { !$secret{$_} && !$view->{$_} } keys %table], [], 'every public key is in what a GET returns');

# the Perl type a key of the table has in the schemas
sub perl_type {
    my ($k) = @_;
    return 'array' if $k->{multi};
    return 'boolean' if $k->{kind} =~ /bool/i;
    return 'integer' if $k->{kind} =~ /int|port|count|number/i;
    return 'string';
}
is($create->{$_}{type}, perl_type($table{$_}), "$_: type $table{$_}{kind}" . ($table{$_}{multi} ? ' (list)' : ''))
    for sort keys %table;
is(($create->{$_}{enum} ? 1 : 0), ($table{$_}{kind} eq 'choice' ? 1 : 0),
    "$_: " . ($table{$_}{kind} eq 'choice' ? 'one of a fixed set' : 'free') . ' in the schema') for sort keys %table;

my $delete_item = qr/$update->{delete}{items}{pattern}/;
for my $k (sort keys %table) {
    is(($k =~ $delete_item ? 1 : 0), ($table{$k}{deletable} ? 1 : 0),
        "$k: " . ($table{$k}{deletable} ? '' : 'not ') . 'deletable through the API');
}

# the CLI takes each secret from a file, stdin or a prompt (here: no terminal, so it says how)
for my $k (sort keys %secret) {
    my $out = `$^X bin/oxnotify target update x --$k < /dev/null 2>&1`;
    like($out, qr/--\Q$k\E (?:needs a value|is a file): give --\Q$k\E-file FILE/, "CLI: --$k is a secret");
}
my $out = `$^X bin/oxnotify target update x --comment < /dev/null 2>&1`;
like($out, qr/option --comment needs a value/, 'CLI: --comment is not');

# The page's form is built from the table (/form.json): every key says where it applies and
# which targets need it, in conditions on other keys' values that the table can take; a choice
# key lists its values. The page labels the keys it knows; others show by name.
sub cond_ok {
    my ($cond, $what) = @_;
    ok(ref($cond) eq 'ARRAY', "$what: a list of alternatives") or return;
    for my $w (map { @$_ } @$cond) {
        my $k = $table{ $w->{key} // '' };
        ok($k && $k->{kind} eq 'choice', "$what: depends on choice key $w->{key}") or next;
        my %values = map { ($_->{value} => 1) } @{ $k->{choices} };
        is_deeply([grep { $_ ne '' && !$values{$_} } @{ $w->{values} }], [], "$what: values $w->{key} can take");
    }
}
for my $k (@table) {
    cond_ok($k->{$_}, "$k->{name} $_") for qw(applies needed);
    is((@{ $k->{choices} } ? 1 : 0), ($k->{kind} eq 'choice' ? 1 : 0), "$k->{name}: choices listed if a choice");
    cond_ok($_->{applies}, "$k->{name} choice $_->{value}") for @{ $k->{choices} };
    my %enum = map { ($_ => 1) } @{ $create->{ $k->{name} }{enum} // [] };
    is_deeply([sort grep { !$enum{$_} } map { $_->{value} } @{ $k->{choices} }], [], "$k->{name}: its choices are in the API's enum");
}
my $app = Mojo::File->new('perl/share/www/app.js')->slurp;
my ($labels) = $app =~ /^const LABELS = \{(.*?)^\};/ms;
my %label = map { ($_ => 1) } $labels =~ /^\s+'?([a-z0-9-]+)'?: \[/mg;
is_deeply([sort grep { !$label{$_} } keys %table], [], 'the page has a label for every key of the table');
done_testing();
