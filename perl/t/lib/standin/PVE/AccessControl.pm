package PVE::AccessControl;

# STAND-IN for pve-access-control's PVE::AccessControl, which needs the cluster filesystem.
# It provides only what the real PVE::RPCEnvironment calls on the request path tested by
# perl/t/80-pve-stack.t. verify_privname accepts exactly the privileges the test collects from
# the real pve-manager sources (%KNOWN_PRIVS), so a method using a privilege the stack does
# not know fails as it would there.

use strict;
use warnings;

our %KNOWN_PRIVS;

sub verify_privname {
    my ($priv, $noerr) = @_;
    return $priv if $KNOWN_PRIVS{$priv};
    return undef if $noerr;
    die "invalid privilege '$priv'\n";
}

sub normalize_path {
    my ($path) = @_;
    return undef if !defined $path;
    $path = "/$path";
    $path =~ s|/+|/|g;
    $path =~ s|/$||;
    $path = '/' if $path eq '';
    return $path =~ m|^[[:alnum:]\.\-\_\/]+$| ? $path : undef;
}

sub pve_verify_tokenid {
    my ($tokenid, $noerr) = @_;
    return $tokenid if $tokenid =~ m/^\S+\@\S+!\S+$/;
    return undef if $noerr;
    die "value '$tokenid' does not look like a valid token ID\n";
}

sub split_tokenid {
    my ($tokenid, $noerr) = @_;
    return ($1, $2) if $tokenid =~ m/^(.+)!([^!]+)$/;
    return undef if $noerr;
    die "'$tokenid' is not a valid token ID\n";
}

sub verify_username {
    my ($username, $noerr) = @_;
    if ($username =~ m!^([^\s:/]+)\@([A-Za-z][A-Za-z0-9\.\-_]+)$!) {
        return wantarray ? ($username, $1, $2) : $username;
    }
    return undef if $noerr;
    die "value '$username' does not look like a valid user name\n";
}

1;
