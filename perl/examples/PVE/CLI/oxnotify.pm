package PVE::CLI::oxnotify;

# Example (tested by perl/t/80-pve-stack.t): a PVE::CLIHandler command line over the methods of
# PVE::API2::OxNotify. A stack's wrapper script runs PVE::CLI::oxnotify->run_cli_handler().

use strict;
use warnings;

use PVE::CLIFormatter;
use PVE::CLIHandler;
use PVE::RESTHandler;
use PVE::RPCEnvironment;
use PVE::API2::OxNotify;

use base qw(PVE::CLIHandler);

sub setup_environment {
    PVE::RPCEnvironment->setup_default_cli_env();
}

my $print = sub {
    my ($data, $schema, $options) = @_;
    PVE::CLIFormatter::print_api_result($data, $schema, undef, $options);
};
my $api = 'PVE::API2::OxNotify';
my $out = $PVE::RESTHandler::standard_output_options;

our $cmddef = {
    list => [$api, 'get_smtp_endpoints', [], {}, $print, $out],
    show => [$api, 'get_smtp_endpoint', ['name'], {}, $print, $out],
    create => [$api, 'create_smtp_endpoint', ['name']],
    set => [$api, 'update_smtp_endpoint', ['name']],
    remove => [$api, 'delete_smtp_endpoint', ['name']],
    test => [$api, 'test_target', ['name']],
    status => [$api, 'oauth2_status', ['name'], {}, $print, $out],
    targets => [$api, 'get_targets', [], {}, $print, $out],
};

1;

__END__

=head1 NAME

PVE::CLI::oxnotify - example: a PVE::CLIHandler command line over oxnotify's API methods

=cut
