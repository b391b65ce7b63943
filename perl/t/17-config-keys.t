# The Perl side's key lists agree with the core's key table (OxNotify::Core::config_keys):
# the API parameters and their types, what is secret (never returned, asked for by the CLI),
# what can be deleted, and the web page's form inputs. Adding a key in Rust fails here until
# the Perl schema and the page (or the list of keys the page leaves to the CLI and API) follow.
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

# The page's form: each input is a config key; secrets are never shown (empty keeps them), list
# keys are split (data-list), integers are number inputs.
my %PAGE_LEAVES = map { $_ => 1 } (
    'mailto-user', 'disable', 'allow-insecure-auth', 'max-connections', 'broker-allow-user', 'broker-allow-group',
    # the alert keys are set with the CLI and the API until the page has inputs for them
    'alert-target', 'oauth2-credential-expires',
);
my ($form) = Mojo::File->new('perl/share/www/index.html')->slurp =~ m{<form id="target-form">(.*?)</form>}s;
my %field = map { /\bname="([^"]+)"/ ? ($1 => $_) : () } $form =~ /(<(?:input|select|textarea)\b[^>]*>)/g;
delete @field{qw(name digest)};
is_deeply([sort grep { !$table{$_} } keys %field], [], 'every field of the page is a config key');
is_deeply([sort grep { !$field{$_} && !$PAGE_LEAVES{$_} } keys %table], [],
    'every config key is on the page, or left to the CLI and API on purpose');
is_deeply([sort grep { $field{$_} } keys %PAGE_LEAVES], [], '... and those are not on the page');
for my $k (sort keys %field) {
    my $f = $field{$k};
    is(($f =~ /placeholder="unchanged if empty"/ ? 1 : 0), ($table{$k}{private} ? 1 : 0),
        "page: $k " . ($table{$k}{private} ? 'is' : 'is not') . ' a secret field');
    like($f, qr/type="password"|<textarea/, "page: $k is not shown") if $table{$k}{private};
    is(($f =~ /\sdata-list\b/ ? 1 : 0), ($table{$k}{multi} ? 1 : 0), "page: $k is " . ($table{$k}{multi} ? '' : 'not ') . 'a list');
    is(($f =~ /type="number"/ ? 1 : 0), (perl_type($table{$k}) eq 'integer' ? 1 : 0), "page: $k as a number or not");
}
done_testing();
