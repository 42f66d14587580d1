//! [`FakeDirectory`]: Active Directory in memory, applying the core's plans the way the LDAP
//! adapter sequences them, with AD's own rules and result codes (as measured on Samba and
//! Windows AD): a second object with the same sAMAccountName (compared case-insensitively) or
//! DN is `AlreadyExists` (68), a second userPrincipalName is `ConstraintViolation` (19), so is a
//! sAMAccountName Windows refuses, and a missing parent or object is `NoSuchObject` (32).

use crate::faults::{lock, Faults, MakeError};
use async_trait::async_trait;
use shadowsync_core::account::uac;
use shadowsync_core::{
    dn, ActualAccount, AttributeChange, Location, ManagedAttributes, Operation, Policy,
};
use shadowsync_ports::{ensure_owned, Directory, DirectoryError, DirectoryObject};
use std::sync::{Arc, Mutex};

/// Kinds of directory calls, for fault injection and hooks. `Read` and `Write` match every
/// read (the port's searches) and every write (the LDAP operations `apply` sends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirOp {
    Read,
    Write,
    FindByAnchor,
    FindBySamAccountName,
    FindByUserPrincipalName,
    ReadAccount,
    ListAccounts,
    /// The add that creates an account.
    Add,
    Modify,
    /// Rename or move (LDAP modifyDN).
    ModifyDn,
    Delete,
}

impl DirOp {
    fn is_write(self) -> bool {
        matches!(
            self,
            Self::Add | Self::Modify | Self::ModifyDn | Self::Delete
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectClass {
    /// A naming context or container (the domain root).
    Domain,
    OrganizationalUnit,
    User,
    Group,
}

/// One directory object. Only what shadowsync reads or writes is modelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub dn: String,
    pub class: ObjectClass,
    pub object_guid: String,
    /// The anchor attribute's value (`adminDescription` by default).
    pub anchor: Option<String>,
    pub sam_account_name: Option<String>,
    /// `userPrincipalName` is `attributes.user_principal_name`.
    pub attributes: ManagedAttributes,
    pub user_account_control: u32,
}

impl Object {
    fn account(&self) -> ActualAccount {
        ActualAccount {
            dn: self.dn.clone(),
            object_guid: Some(self.object_guid.clone()),
            anchor: self.anchor.clone(),
            sam_account_name: self.sam_account_name.clone().unwrap_or_default(),
            // As the LDAP adapter reads it: the cn value, and the parent re-serialised.
            location: Location {
                cn: dn::first_value(&self.dn).unwrap_or_default(),
                ou: dn::parent(&self.dn).unwrap_or_default(),
            },
            attributes: self.attributes.clone(),
            user_account_control: self.user_account_control,
        }
    }

    fn upn(&self) -> Option<&str> {
        self.attributes.user_principal_name.as_deref()
    }
}

/// An object for [`FakeDirectory::add_object`]: put there by someone else (an employee, an
/// administrator), so it counts as none of shadowsync's writes, but AD's rules still apply.
#[derive(Debug, Clone)]
pub struct NewObject {
    /// The parent OU's DN.
    pub ou: String,
    pub cn: String,
    pub class: ObjectClass,
    pub sam_account_name: Option<String>,
    pub user_principal_name: Option<String>,
    pub anchor: Option<String>,
    pub user_account_control: u32,
}

impl NewObject {
    /// An enabled user without an anchor (an employee).
    pub fn user(ou: &str, cn: &str, sam: &str, upn: Option<&str>) -> Self {
        Self {
            ou: ou.into(),
            cn: cn.into(),
            class: ObjectClass::User,
            sam_account_name: Some(sam.into()),
            user_principal_name: upn.map(Into::into),
            anchor: None,
            user_account_control: uac::NORMAL_ACCOUNT,
        }
    }
}

type Hook = Box<dyn FnOnce(&FakeDirectory) + Send>;

#[derive(Default)]
pub(crate) struct State {
    objects: Vec<Object>,
    guids: u64,
    faults: Faults<DirOp, DirectoryError>,
    hooks: Vec<(DirOp, Hook)>,
    /// shadowsync's successful writes, one line per LDAP operation.
    writes: Vec<String>,
    reads: usize,
    /// The partner accounts ([`crate::partners`]).
    pub(crate) partners: crate::partners::Partners,
}

/// Active Directory in memory. Cheap to share behind an `Arc`.
#[derive(Default)]
pub struct FakeDirectory {
    pub(crate) state: Mutex<State>,
}

impl FakeDirectory {
    /// A domain with only its root object, `base_dn`.
    pub fn new(base_dn: &str) -> Self {
        let dir = Self::default();
        let mut s = lock(&dir.state);
        let guid = next_guid(&mut s);
        s.objects.push(Object {
            dn: base_dn.into(),
            class: ObjectClass::Domain,
            object_guid: guid,
            anchor: None,
            sam_account_name: None,
            attributes: ManagedAttributes::default(),
            user_account_control: 0,
        });
        drop(s);
        dir
    }

    /// A domain `base_dn` with the policy's two managed OUs in it.
    pub fn with_managed_ous(base_dn: &str, policy: &Policy) -> Result<Self, DirectoryError> {
        let dir = Self::new(base_dn);
        dir.add_ou(&policy.guests_ou)?;
        if !dn::same(&policy.guests_ou, &policy.disabled_ou) {
            dir.add_ou(&policy.disabled_ou)?;
        }
        Ok(dir)
    }

    /// Creates an OU; its parent must exist.
    pub fn add_ou(&self, ou_dn: &str) -> Result<(), DirectoryError> {
        let mut s = lock(&self.state);
        let parent = dn::parent(ou_dn).ok_or_else(|| invalid_dn(ou_dn))?;
        let cn = dn::first_value(ou_dn).map_err(|_| invalid_dn(ou_dn))?;
        let mut ou = new_object(&mut s, &parent, "OU", &cn, ObjectClass::OrganizationalUnit);
        ou.dn = ou_dn.into();
        add(&mut s, ou)
    }

    /// Adds an object as someone other than shadowsync would (not counted as a write).
    pub fn add_object(&self, spec: NewObject) -> Result<String, DirectoryError> {
        let mut s = lock(&self.state);
        let mut object = new_object(&mut s, &spec.ou, "CN", &spec.cn, spec.class);
        object.sam_account_name = spec.sam_account_name;
        object.attributes.user_principal_name = spec.user_principal_name;
        object.anchor = spec.anchor;
        object.user_account_control = spec.user_account_control;
        let dn = object.dn.clone();
        add(&mut s, object)?;
        Ok(dn)
    }

    /// An employee: an enabled user with no anchor.
    pub fn add_employee(
        &self,
        ou: &str,
        cn: &str,
        sam: &str,
        upn: &str,
    ) -> Result<String, DirectoryError> {
        self.add_object(NewObject::user(ou, cn, sam, Some(upn)))
    }

    /// A user carrying `anchor` (say, one copied by hand outside the managed OUs).
    pub fn add_anchored_user(
        &self,
        ou: &str,
        cn: &str,
        sam: &str,
        anchor: &str,
    ) -> Result<String, DirectoryError> {
        self.add_object(NewObject {
            anchor: Some(anchor.into()),
            ..NewObject::user(ou, cn, sam, None)
        })
    }

    /// The user object at `dn`, read without counting as a read.
    pub fn account(&self, dn: &str) -> Option<ActualAccount> {
        let s = lock(&self.state);
        find(&s, dn)
            .filter(|o| o.class == ObjectClass::User)
            .map(Object::account)
    }

    /// Every user object carrying `anchor`, wherever it is.
    pub fn accounts_with_anchor(&self, anchor: &str) -> Vec<ActualAccount> {
        let s = lock(&self.state);
        users_with_anchor(&s, anchor)
    }

    /// Every object, in creation order.
    pub fn objects(&self) -> Vec<Object> {
        lock(&self.state).objects.clone()
    }

    /// Every user object, in creation order.
    pub fn accounts(&self) -> Vec<ActualAccount> {
        let s = lock(&self.state);
        s.objects
            .iter()
            .filter(|o| o.class == ObjectClass::User)
            .map(Object::account)
            .collect()
    }

    /// shadowsync's successful writes so far, one line per LDAP operation: `add <dn>`,
    /// `modify <dn> <attribute>=<value>, …`, `modrdn <dn> -> <new dn>`, `delete <dn>`.
    pub fn writes(&self) -> Vec<String> {
        lock(&self.state).writes.clone()
    }

    pub fn write_count(&self) -> usize {
        lock(&self.state).writes.len()
    }

    /// The port's reads so far (searches and base reads).
    pub fn read_count(&self) -> usize {
        lock(&self.state).reads
    }

    /// The next `times` calls of kind `op` fail with `make()`, without touching anything.
    pub fn fail(
        &self,
        op: DirOp,
        times: usize,
        make: impl Fn() -> DirectoryError + Send + Sync + 'static,
    ) {
        self.fail_after(op, 0, times, make);
    }

    /// Lets `pass` calls of kind `op` through, then fails the next `times`.
    pub fn fail_after(
        &self,
        op: DirOp,
        pass: usize,
        times: usize,
        make: impl Fn() -> DirectoryError + Send + Sync + 'static,
    ) {
        let make: MakeError<DirectoryError> = Arc::new(make);
        lock(&self.state).faults.add(op, pass, times, make);
    }

    pub fn clear_faults(&self) {
        lock(&self.state).faults.clear();
    }

    /// Runs `hook` just before the next call of kind `op` is carried out: someone else acting
    /// at that moment (taking a name between shadowsync's check and its add, say).
    pub fn before_next(&self, op: DirOp, hook: impl FnOnce(&FakeDirectory) + Send + 'static) {
        lock(&self.state).hooks.push((op, Box::new(hook)));
    }

    /// Hooks first (outside the lock: they call back in), then faults; counts reads.
    pub(crate) fn begin(&self, op: DirOp) -> Result<(), DirectoryError> {
        let general = if op.is_write() {
            DirOp::Write
        } else {
            DirOp::Read
        };
        let hooks: Vec<Hook> = {
            let mut s = lock(&self.state);
            let (due, keep) = std::mem::take(&mut s.hooks)
                .into_iter()
                .partition(|(k, _)| *k == op || *k == general);
            s.hooks = keep;
            due.into_iter().map(|(_, h)| h).collect()
        };
        for hook in hooks {
            hook(self);
        }
        let mut s = lock(&self.state);
        if !op.is_write() {
            s.reads += 1;
        }
        match s.faults.check(&[op, general]) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn write(
        &self,
        op: DirOp,
        work: impl FnOnce(&mut State) -> Result<String, DirectoryError>,
    ) -> Result<(), DirectoryError> {
        self.begin(op)?;
        let mut s = lock(&self.state);
        let line = work(&mut s)?;
        s.writes.push(line);
        Ok(())
    }

    fn modify(&self, target: &str, changes: &[AttributeChange]) -> Result<(), DirectoryError> {
        self.write(DirOp::Modify, |s| modify(s, target, changes))
    }

    fn move_to(&self, target: &str, to: &Location) -> Result<String, DirectoryError> {
        let new_dn = to.dn();
        self.write(DirOp::ModifyDn, |s| modify_dn(s, target, &new_dn))?;
        Ok(new_dn)
    }
}

fn next_guid(s: &mut State) -> String {
    s.guids += 1;
    format!("0000ad00-0000-4000-8000-{:012x}", s.guids)
}

fn new_object(
    s: &mut State,
    parent: &str,
    rdn_type: &str,
    value: &str,
    class: ObjectClass,
) -> Object {
    Object {
        dn: dn::child(rdn_type, value, parent),
        class,
        object_guid: next_guid(s),
        anchor: None,
        sam_account_name: None,
        attributes: ManagedAttributes::default(),
        user_account_control: 0,
    }
}

fn invalid_dn(d: &str) -> DirectoryError {
    DirectoryError::InvalidDnSyntax(format!("invalid DN syntax: {d}"))
}

fn no_such_object(d: &str) -> DirectoryError {
    DirectoryError::NoSuchObject(format!(
        "0000208D: NameErr: problem 2001 (NO_OBJECT), best match of: {d}"
    ))
}

fn find<'a>(s: &'a State, d: &str) -> Option<&'a Object> {
    s.objects.iter().find(|o| dn::same(&o.dn, d))
}

fn index(s: &State, d: &str) -> Result<usize, DirectoryError> {
    s.objects
        .iter()
        .position(|o| dn::same(&o.dn, d))
        .ok_or_else(|| no_such_object(d))
}

fn users_with_anchor(s: &State, anchor: &str) -> Vec<ActualAccount> {
    s.objects
        .iter()
        .filter(|o| o.class == ObjectClass::User)
        // adminDescription is a case-insensitive string in AD's schema.
        .filter(|o| {
            o.anchor
                .as_deref()
                .is_some_and(|a| a.to_lowercase() == anchor.to_lowercase())
        })
        .map(Object::account)
        .collect()
}

fn directory_object(o: &Object) -> DirectoryObject {
    DirectoryObject {
        dn: o.dn.clone(),
        object_guid: Some(o.object_guid.clone()),
        anchor: o.anchor.clone(),
    }
}

/// Windows AD's rule for a sAMAccountName (Samba is more lenient; shadowsync keeps Windows').
fn sam_error(sam: &str) -> Option<DirectoryError> {
    const FORBIDDEN: &str = "\"/\\[]:;|=,+*?<>@";
    let bad = sam.is_empty()
        || sam.encode_utf16().count() > 20
        || sam.ends_with('.')
        || sam.chars().any(|c| c.is_control() || FORBIDDEN.contains(c));
    bad.then(|| {
        DirectoryError::ConstraintViolation(format!(
            "000021C7: AtrErr: problem 1005 (CONSTRAINT_ATT_TYPE), Att 900dd (sAMAccountName): {sam:?}"
        ))
    })
}

/// A cn longer than its rangeUpper (64) is refused by Windows AD.
fn cn_error(d: &str) -> Option<DirectoryError> {
    let cn = dn::first_value(d).ok()?;
    (cn.encode_utf16().count() > 64).then(|| {
        DirectoryError::ConstraintViolation(format!(
            "000021C7: AtrErr: problem 1005 (CONSTRAINT_ATT_TYPE), Att 3 (cn): {cn:?}"
        ))
    })
}

fn upn_error(s: &State, upn: Option<&str>, except: Option<usize>) -> Option<DirectoryError> {
    let upn = upn?;
    let taken = s.objects.iter().enumerate().any(|(i, o)| {
        Some(i) != except
            && o.upn()
                .is_some_and(|u| u.to_lowercase() == upn.to_lowercase())
    });
    taken.then(|| {
        DirectoryError::ConstraintViolation(format!(
            "000021C8: AtrErr: problem 1005 (CONSTRAINT_ATT_TYPE), Att 90290 (userPrincipalName): {upn} is already in use"
        ))
    })
}

fn add(s: &mut State, object: Object) -> Result<(), DirectoryError> {
    dn::parse(&object.dn).map_err(|_| invalid_dn(&object.dn))?;
    let parent = dn::parent(&object.dn).ok_or_else(|| no_such_object(&object.dn))?;
    if find(s, &parent).is_none() {
        return Err(no_such_object(&parent));
    }
    if find(s, &object.dn).is_some() {
        return Err(DirectoryError::AlreadyExists(format!(
            "00002071: UpdErr: problem 6005 (ENTRY_EXISTS): {}",
            object.dn
        )));
    }
    if let Some(e) = cn_error(&object.dn) {
        return Err(e);
    }
    if let Some(sam) = &object.sam_account_name {
        if let Some(e) = sam_error(sam) {
            return Err(e);
        }
        let taken = s.objects.iter().any(|o| {
            o.sam_account_name
                .as_deref()
                .is_some_and(|x| x.to_lowercase() == sam.to_lowercase())
        });
        if taken {
            return Err(DirectoryError::AlreadyExists(format!(
                "00000524: UpdErr: DSID-031A11E2, problem 6005 (ENTRY_EXISTS): sAMAccountName {sam} is already in use"
            )));
        }
    }
    if let Some(e) = upn_error(s, object.upn(), None) {
        return Err(e);
    }
    s.objects.push(object);
    Ok(())
}

fn modify(
    s: &mut State,
    target: &str,
    changes: &[AttributeChange],
) -> Result<String, DirectoryError> {
    let i = index(s, target)?;
    // All or nothing, like one LDAP modify: check every change before making any.
    for c in changes {
        let error = match c.attribute.as_str() {
            "userAccountControl" => c
                .value
                .as_deref()
                .and_then(|v| v.parse::<u32>().ok())
                .is_none()
                .then(|| DirectoryError::Other {
                    rc: 21,
                    text: format!("invalid userAccountControl {:?}", c.value),
                }),
            "userPrincipalName" => upn_error(s, c.value.as_deref(), Some(i)),
            _ => None,
        };
        if let Some(e) = error {
            return Err(e);
        }
    }
    let object = &mut s.objects[i];
    for c in changes {
        if c.attribute == "userAccountControl" {
            object.user_account_control =
                c.value.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0);
        } else {
            object.attributes.set(&c.attribute, c.value.clone());
        }
    }
    let described: Vec<String> = changes
        .iter()
        .map(|c| format!("{}={}", c.attribute, c.value.as_deref().unwrap_or("")))
        .collect();
    Ok(format!("modify {} {}", object.dn, described.join(", ")))
}

fn modify_dn(s: &mut State, target: &str, new_dn: &str) -> Result<String, DirectoryError> {
    let i = index(s, target)?;
    let parent = dn::parent(new_dn).ok_or_else(|| invalid_dn(new_dn))?;
    if find(s, &parent).is_none() {
        return Err(no_such_object(&parent));
    }
    // Renaming an object onto itself (a case change) is allowed; onto another is not.
    if s.objects
        .iter()
        .enumerate()
        .any(|(j, o)| j != i && dn::same(&o.dn, new_dn))
    {
        return Err(DirectoryError::AlreadyExists(format!(
            "00002071: UpdErr: problem 6005 (ENTRY_EXISTS): {new_dn}"
        )));
    }
    if let Some(e) = cn_error(new_dn) {
        return Err(e);
    }
    let old = std::mem::replace(&mut s.objects[i].dn, new_dn.to_string());
    Ok(format!("modrdn {old} -> {new_dn}"))
}

fn delete(s: &mut State, target: &str) -> Result<String, DirectoryError> {
    let i = index(s, target)?;
    let has_children = s
        .objects
        .iter()
        .any(|o| dn::parent(&o.dn).is_some_and(|p| dn::same(&p, target)));
    if has_children {
        return Err(DirectoryError::Other {
            rc: 66,
            text: format!("notAllowedOnNonLeaf: {target}"),
        });
    }
    let object = s.objects.remove(i);
    Ok(format!("delete {}", object.dn))
}

#[async_trait]
impl Directory for FakeDirectory {
    async fn find_by_anchor(&self, anchor: &str) -> Result<Vec<ActualAccount>, DirectoryError> {
        self.begin(DirOp::FindByAnchor)?;
        Ok(users_with_anchor(&lock(&self.state), anchor))
    }

    async fn find_by_sam_account_name(
        &self,
        sam: &str,
    ) -> Result<Option<DirectoryObject>, DirectoryError> {
        self.begin(DirOp::FindBySamAccountName)?;
        let s = lock(&self.state);
        Ok(s.objects
            .iter()
            .find(|o| {
                o.sam_account_name
                    .as_deref()
                    .is_some_and(|x| x.to_lowercase() == sam.to_lowercase())
            })
            .map(directory_object))
    }

    async fn find_by_user_principal_name(
        &self,
        upn: &str,
    ) -> Result<Option<DirectoryObject>, DirectoryError> {
        self.begin(DirOp::FindByUserPrincipalName)?;
        let s = lock(&self.state);
        Ok(s.objects
            .iter()
            .find(|o| {
                o.upn()
                    .is_some_and(|u| u.to_lowercase() == upn.to_lowercase())
            })
            .map(directory_object))
    }

    async fn read_account(&self, dn: &str) -> Result<Option<ActualAccount>, DirectoryError> {
        self.begin(DirOp::ReadAccount)?;
        let s = lock(&self.state);
        Ok(find(&s, dn)
            .filter(|o| o.class == ObjectClass::User)
            .map(Object::account))
    }

    async fn list_accounts(&self, ou: &str) -> Result<Vec<ActualAccount>, DirectoryError> {
        self.begin(DirOp::ListAccounts)?;
        let s = lock(&self.state);
        // A search whose base does not exist answers 32, as AD does.
        if find(&s, ou).is_none() {
            return Err(no_such_object(ou));
        }
        Ok(s.objects
            .iter()
            .filter(|o| o.class == ObjectClass::User && dn::is_within(&o.dn, ou))
            .map(Object::account)
            .collect())
    }

    /// The LDAP adapter's sequence, operation by operation (not atomic: a failure leaves what
    /// was done before it, as on a real DC).
    async fn apply(
        &self,
        account: Option<&ActualAccount>,
        plan: &[Operation],
        policy: &Policy,
    ) -> Result<Option<String>, DirectoryError> {
        if let Some(a) = account {
            ensure_owned(a, policy)?;
        }
        let mut current = account.map(|a| a.dn.clone());
        for op in plan {
            let target = || current.clone().ok_or(DirectoryError::NoAccount);
            match op {
                Operation::Create { account } => {
                    let dn = account.location.dn();
                    let object = Object {
                        dn: dn.clone(),
                        class: ObjectClass::User,
                        object_guid: String::new(),
                        anchor: Some(account.anchor.clone()),
                        sam_account_name: Some(account.sam_account_name.clone()),
                        attributes: account.attributes.clone(),
                        user_account_control: uac::ENABLED,
                    };
                    self.write(DirOp::Add, |s| {
                        let object = Object {
                            object_guid: next_guid(s),
                            ..object
                        };
                        add(s, object)?;
                        Ok(format!("add {dn}"))
                    })?;
                    current = Some(dn);
                }
                Operation::Update { changes } => self.modify(&target()?, changes)?,
                Operation::Disable { move_to } => {
                    let dn = target()?;
                    self.modify(&dn, &[control(uac::DISABLED)])?;
                    if let Some(to) = move_to {
                        current = Some(self.move_to(&dn, to)?);
                    }
                }
                Operation::Enable { move_to } => {
                    let mut dn = target()?;
                    if let Some(to) = move_to {
                        dn = self.move_to(&dn, to)?;
                        current = Some(dn.clone());
                    }
                    self.modify(&dn, &[control(uac::ENABLED)])?;
                }
                Operation::Move { to } => current = Some(self.move_to(&target()?, to)?),
                Operation::Delete { .. } => {
                    let dn = target()?;
                    self.write(DirOp::Delete, |s| delete(s, &dn))?;
                    current = None;
                }
                Operation::Conflict { .. } => {}
            }
        }
        Ok(current)
    }
}

fn control(value: u32) -> AttributeChange {
    AttributeChange {
        attribute: "userAccountControl".into(),
        value: Some(value.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shadowsync_core::{GraphUser, ObjectId, ShadowAccount};

    const BASE: &str = "DC=corp,DC=test";
    const STAFF: &str = "OU=Staff,DC=corp,DC=test";

    fn policy() -> Policy {
        Policy::new(
            "OU=Guests,DC=corp,DC=test",
            "OU=Disabled Guests,DC=corp,DC=test",
        )
    }

    fn directory() -> FakeDirectory {
        let d = FakeDirectory::with_managed_ous(BASE, &policy()).unwrap();
        d.add_ou(STAFF).unwrap();
        d
    }

    fn shadow(label: &str, upn: &str) -> ShadowAccount {
        let user = GraphUser {
            id: ObjectId::from_label(label),
            user_principal_name: Some(upn.into()),
            display_name: Some(label.into()),
            user_type: Some("Guest".into()),
            ..Default::default()
        };
        ShadowAccount::for_user(&user, &policy())
    }

    fn create(account: ShadowAccount) -> Vec<Operation> {
        vec![Operation::Create {
            account: Box::new(account),
        }]
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    #[test]
    fn names_are_unique_the_way_ad_says() {
        rt().block_on(async {
            let d = directory();
            d.add_employee(STAFF, "Bob", "Bob.Smith", "bob@corp.test")
                .unwrap();
            let p = policy();
            let mut a = shadow("a", "x_y.com#EXT#@t.onmicrosoft.com");
            a.sam_account_name = "bob.smith".into();
            let e = d.apply(None, &create(a), &p).await.unwrap_err();
            assert!(matches!(e, DirectoryError::AlreadyExists(_)), "{e}");
            let e = d
                .apply(None, &create(shadow("b", "BOB@corp.test")), &p)
                .await
                .unwrap_err();
            assert!(matches!(e, DirectoryError::ConstraintViolation(_)), "{e}");
            for bad in ["a@b", "trailing.", "twenty-one-characters", "a[b]"] {
                let mut a = shadow("c", "c@t");
                a.sam_account_name = bad.into();
                let e = d.apply(None, &create(a), &p).await.unwrap_err();
                assert!(
                    matches!(e, DirectoryError::ConstraintViolation(_)),
                    "{bad}: {e}"
                );
            }
            let mut lost = shadow("d", "d@t");
            lost.location.ou = "OU=Nowhere,DC=corp,DC=test".into();
            let e = d.apply(None, &create(lost), &p).await.unwrap_err();
            assert!(matches!(e, DirectoryError::NoSuchObject(_)), "{e}");
            assert_eq!(d.write_count(), 0, "nothing was written");
            assert!(d
                .apply(None, &create(shadow("e", "e@t")), &p)
                .await
                .unwrap()
                .is_some());
            assert_eq!(d.write_count(), 1);
        });
    }

    #[test]
    fn refuses_objects_it_does_not_own_before_writing() {
        rt().block_on(async {
            let d = directory();
            let dn = d
                .add_employee(STAFF, "Bob", "bob", "bob@corp.test")
                .unwrap();
            let bob = d.account(&dn).unwrap();
            let e = d
                .apply(
                    Some(&bob),
                    &[Operation::Delete { reason: "x".into() }],
                    &policy(),
                )
                .await
                .unwrap_err();
            assert!(matches!(e, DirectoryError::NotOwned { .. }));
            assert!(d.account(&dn).is_some());
        });
    }

    #[test]
    fn disable_sets_the_flags_then_moves_and_faults_touch_nothing() {
        rt().block_on(async {
            let d = directory();
            let p = policy();
            let a = shadow("a", "a@t");
            let dn = d
                .apply(None, &create(a.clone()), &p)
                .await
                .unwrap()
                .unwrap();
            let actual = d.account(&dn).unwrap();
            d.fail(DirOp::Write, 1, || DirectoryError::Busy {
                rc: 51,
                text: "busy".into(),
            });
            let disable = [Operation::Disable {
                move_to: Some(Location {
                    cn: a.location.cn.clone(),
                    ou: p.disabled_ou.clone(),
                }),
            }];
            assert!(d
                .apply(Some(&actual), &disable, &p)
                .await
                .unwrap_err()
                .is_retryable());
            assert_eq!(d.account(&dn).unwrap(), actual);
            let moved = d.apply(Some(&actual), &disable, &p).await.unwrap().unwrap();
            let w = d.writes();
            assert!(
                w[1].starts_with("modify ")
                    && w[1].ends_with(&format!("userAccountControl={}", uac::DISABLED)),
                "{w:?}"
            );
            assert!(w[2].starts_with("modrdn "), "{w:?}");
            let after = d.account(&moved).unwrap();
            assert!(!after.is_enabled());
            assert_eq!(after.location.ou, p.disabled_ou);
            assert_eq!(after.object_guid, actual.object_guid, "same object");
            assert!(
                d.account(&dn.to_uppercase()).is_none(),
                "DNs compare case-insensitively"
            );
            assert_eq!(d.accounts_with_anchor(&a.anchor.to_uppercase()).len(), 1);
        });
    }

    #[test]
    fn missing_objects_and_hooks() {
        rt().block_on(async {
            let d = directory();
            let p = policy();
            let dn = d
                .apply(None, &create(shadow("a", "a@t")), &p)
                .await
                .unwrap()
                .unwrap();
            let stale = d.account(&dn).unwrap();
            let delete = [Operation::Delete { reason: "x".into() }];
            assert_eq!(d.apply(Some(&stale), &delete, &p).await.unwrap(), None);
            let e = d.apply(Some(&stale), &delete, &p).await.unwrap_err();
            assert!(matches!(e, DirectoryError::NoSuchObject(_)), "{e}");
            let e = d
                .list_accounts("OU=Nope,DC=corp,DC=test")
                .await
                .unwrap_err();
            assert!(matches!(e, DirectoryError::NoSuchObject(_)), "{e}");
            d.before_next(DirOp::FindBySamAccountName, |d| {
                d.add_employee(STAFF, "Late", "late", "late@corp.test")
                    .unwrap();
            });
            assert!(d.find_by_sam_account_name("LATE").await.unwrap().is_some());
        });
    }
}
