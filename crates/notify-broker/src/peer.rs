//! Who is on the other end of a UNIX socket (`SO_PEERCRED`, set by the kernel at connect
//! time, so a client cannot fake it), and the local account database lookups the access
//! check needs (`getpwuid_r`, `getpwnam_r`, `getgrnam_r`: NSS, as `id` sees it).

use std::ffi::{CStr, CString};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

/// The credentials of a connected peer process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// Process ID at connect time.
    pub pid: i32,
    /// Effective user ID.
    pub uid: u32,
    /// Effective (primary) group ID.
    pub gid: u32,
}

/// The peer credentials of `stream`.
pub fn peer_cred(stream: &UnixStream) -> std::io::Result<PeerCred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a properly sized, writable ucred and `len` holds its size.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(PeerCred {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
    })
}

/// Size of the string buffer for the reentrant lookups (grows on ERANGE).
const BUF_START: usize = 1024;
const BUF_MAX: usize = 1 << 20;

/// The name of user `uid`, if it has one.
pub fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; BUF_START];
    loop {
        // SAFETY: zeroed passwd is a valid out-parameter; buf outlives its use below.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc =
            unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
        if rc == libc::ERANGE && buf.len() < BUF_MAX {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 || result.is_null() {
            return None;
        }
        // SAFETY: on success pw_name points to a NUL-terminated string inside buf.
        return Some(
            unsafe { CStr::from_ptr(pwd.pw_name) }
                .to_string_lossy()
                .into_owned(),
        );
    }
}

/// The UID of user `name`, if it exists.
pub fn user_id(name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; BUF_START];
    loop {
        // SAFETY: as in user_name.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = unsafe {
            libc::getpwnam_r(
                name.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < BUF_MAX {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 || result.is_null() {
            return None;
        }
        return Some(pwd.pw_uid);
    }
}

/// A group: its GID and the users listed as its (supplementary) members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Group ID.
    pub gid: u32,
    /// Member user names.
    pub members: Vec<String>,
}

/// Group `name`, if it exists.
pub fn group(name: &str) -> Option<Group> {
    let name = CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; BUF_START];
    loop {
        // SAFETY: zeroed group is a valid out-parameter; buf outlives the reads below.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::group = std::ptr::null_mut();
        let rc = unsafe {
            libc::getgrnam_r(
                name.as_ptr(),
                &mut grp,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < BUF_MAX {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 || result.is_null() {
            return None;
        }
        let mut members = Vec::new();
        let mut p = grp.gr_mem;
        // SAFETY: gr_mem is a NULL-terminated array of NUL-terminated strings inside buf.
        unsafe {
            while !p.is_null() && !(*p).is_null() {
                members.push(CStr::from_ptr(*p).to_string_lossy().into_owned());
                p = p.add(1);
            }
        }
        return Some(Group {
            gid: grp.gr_gid,
            members,
        });
    }
}

/// The effective UID of this process.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_its_own_credentials_through_a_socket_pair() {
        let (a, _b) = UnixStream::pair().unwrap();
        let c = peer_cred(&a).unwrap();
        assert_eq!(c.uid, effective_uid());
        assert_eq!(c.pid, std::process::id() as i32);
    }

    #[test]
    fn looks_up_root() {
        assert_eq!(user_name(0).as_deref(), Some("root"));
        assert_eq!(user_id("root"), Some(0));
        assert_eq!(group("root").map(|g| g.gid), Some(0));
        assert_eq!(user_id("no-such-user-oxnotify"), None);
        assert_eq!(group("no-such-group-oxnotify"), None);
    }
}
