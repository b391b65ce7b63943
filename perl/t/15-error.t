# OxNotify::Core::Error: what the library's error answer carries reaches the caller.
use strict;
use warnings;
use Test::More;
use JSON::PP ();
use OxNotify::Core::Error;

my $e = OxNotify::Core::Error->from_answer({ message => "invalid parameter 'port': '0' is not a port", code => 400 });
is($e->code, 400, 'code');
is("$e", "invalid parameter 'port': '0' is not a port", 'stringifies to the message');
is($e->kind, undef, 'kind undef when the library sends none');
is($e->transient, undef, 'transient undef when the library sends none');
is_deeply($e->errors, { port => "'0' is not a port" }, 'a 400 about one parameter names it in errors');

$e = OxNotify::Core::Error->from_answer({ message => 'SMTP connect failed', code => 502, kind => 'transient', transient => JSON::PP::true() });
is_deeply([$e->code, $e->kind, $e->transient, $e->errors], [502, 'transient', 1, undef], 'kind and transient carried; no errors for a 502');

$e = OxNotify::Core::Error->from_answer({ message => 'x', code => 400, kind => 'invalid-input', param => 'mailto-user' });
is_deeply($e->errors, { 'mailto-user' => 'x' }, 'an explicit param wins');
$e = OxNotify::Core::Error->from_answer({ message => "notification target 'nope' does not exist", code => 404, kind => 'not-found' });
is_deeply([$e->code, $e->kind, $e->errors], [404, 'not-found', undef], '404 with kind');
done_testing();
