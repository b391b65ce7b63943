//! Placeholder: the Perl binding (C ABI over JSON) is built by the binding issue.
