use strict;
use warnings;
use Test::More;

use_ok('OxNotify::Core');
use_ok('OxNotify::Daily');
is(OxNotify::Core::abi_version(), OxNotify::Core::ABI_VERSION(), 'library ABI matches the module');
like(OxNotify::Core::library_path(), qr/libnotify_perl\.so$/, 'library found');

{
    local $ENV{OXNOTIFY_LIB} = '/nonexistent/libnotify_perl.so';
    my $out = `$^X -Iperl/lib -MOxNotify::Core -e 'OxNotify::Core::list_targets()' 2>&1`;
    isnt($?, 0, 'a missing library is fatal');
    like($out, qr{/nonexistent/libnotify_perl\.so}, 'and the error names the path');
}
done_testing();
