//! A validated policy, indexed for the hot path.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use crate::acl::{Action, Protocol, Rule};
use crate::address::{canonical, classify, Protected};
use crate::error::PolicyError;
use crate::model::PolicyDoc;
use crate::password;

/// Index of a user within one compiled policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserId(pub u32);

#[derive(Debug, Clone)]
pub struct CompiledUser {
    pub name: String,
    pub password_hash: String,
    pub enabled: bool,
    pub max_tunnels: Option<u32>,
    pub rules: Vec<Rule>,
}

/// What a request is, apart from the destination address under test.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub protocol: Protocol,
    pub client: IpAddr,
    /// The host name the client asked for, if it named one.
    pub host: Option<&'a str>,
    pub port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// A deny rule matched (index in the user's rules, then the global rules).
    Rule { user_rule: bool, index: usize },
    /// No rule matched and the default action is deny.
    Default,
    /// The address is internal and no rule names it explicitly.
    Protected(Protected),
    /// The destination is one of the proxy's own listeners.
    OwnEndpoint,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(DenyReason),
}

#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    pub revision: u64,
    users: Vec<CompiledUser>,
    by_name: HashMap<String, UserId>,
    rules: Vec<Rule>,
    default_action: Action,
    anonymous_clients: Vec<IpNet>,
    own_endpoints: Vec<SocketAddr>,
}

fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.contains(':')
        && !name.chars().any(char::is_control)
}

impl CompiledPolicy {
    /// Validates `doc` and indexes it. `own_endpoints` are the proxy's listeners: a request
    /// for one of them would loop and is always denied.
    pub fn compile(doc: &PolicyDoc, own_endpoints: &[SocketAddr]) -> Result<Self, PolicyError> {
        let mut by_name = HashMap::with_capacity(doc.users.len());
        let mut users = Vec::with_capacity(doc.users.len());
        for (i, u) in doc.users.iter().enumerate() {
            if !valid_user_name(&u.name) {
                return Err(PolicyError::UserName(u.name.clone()));
            }
            password::validate_phc(&u.name, &u.password_hash)?;
            if by_name.insert(u.name.clone(), UserId(i as u32)).is_some() {
                return Err(PolicyError::DuplicateUser(u.name.clone()));
            }
            users.push(CompiledUser {
                name: u.name.clone(),
                password_hash: u.password_hash.clone(),
                enabled: u.enabled,
                max_tunnels: u.max_tunnels,
                rules: u.rules.clone(),
            });
        }
        Ok(CompiledPolicy {
            revision: doc.revision,
            users,
            by_name,
            rules: doc.rules.clone(),
            default_action: doc.default_action,
            anonymous_clients: doc.effective_anonymous_clients(),
            own_endpoints: own_endpoints.to_vec(),
        })
    }

    pub fn user_by_name(&self, name: &str) -> Option<(UserId, &CompiledUser)> {
        let id = *self.by_name.get(name)?;
        Some((id, &self.users[id.0 as usize]))
    }

    pub fn users(&self) -> impl Iterator<Item = &CompiledUser> {
        self.users.iter()
    }

    pub fn user(&self, id: UserId) -> Option<&CompiledUser> {
        self.users.get(id.0 as usize)
    }

    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    pub fn has_users(&self) -> bool {
        !self.users.is_empty()
    }

    /// Whether a client at `client` may proceed without credentials.
    pub fn anonymous_allowed(&self, client: IpAddr) -> bool {
        let client = canonical(client);
        self.anonymous_clients.iter().any(|n| n.contains(&client))
    }

    fn is_own_endpoint(&self, addr: IpAddr, port: u16) -> bool {
        self.own_endpoints
            .iter()
            .any(|e| e.port() == port && (canonical(e.ip()) == addr || e.ip().is_unspecified()))
    }

    /// Decides whether `req` may connect to `addr`, one of the addresses its destination
    /// resolved to. Every resolved address must be decided on its own: a host-name rule
    /// alone never opens an internal address (DNS rebinding).
    pub fn decide(&self, user: Option<UserId>, req: &Request<'_>, addr: IpAddr) -> Decision {
        let addr = canonical(addr);
        let client = canonical(req.client);
        if self.is_own_endpoint(addr, req.port) {
            return Decision::Deny(DenyReason::OwnEndpoint);
        }
        let user_rules = user
            .and_then(|id| self.user(id))
            .map(|u| u.rules.as_slice())
            .unwrap_or(&[]);
        let matched = user_rules
            .iter()
            .enumerate()
            .map(|(i, r)| (true, i, r))
            .chain(self.rules.iter().enumerate().map(|(i, r)| (false, i, r)))
            .find(|(_, _, r)| r.matches(req.protocol, client, req.host, addr, req.port));
        let protected = classify(addr);
        match matched {
            Some((user_rule, index, rule)) => match rule.action {
                Action::Deny => Decision::Deny(DenyReason::Rule { user_rule, index }),
                Action::Allow => match protected {
                    Some(p) if !rule.names_address(addr) => {
                        Decision::Deny(DenyReason::Protected(p))
                    }
                    _ => Decision::Allow,
                },
            },
            None => match (protected, self.default_action) {
                (Some(p), _) => Decision::Deny(DenyReason::Protected(p)),
                (None, Action::Allow) => Decision::Allow,
                (None, Action::Deny) => Decision::Deny(DenyReason::Default),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::User;

    fn doc(toml_text: &str) -> PolicyDoc {
        toml::from_str(toml_text).unwrap()
    }

    fn req(host: Option<&str>, port: u16) -> Request<'_> {
        Request {
            protocol: Protocol::Socks5,
            client: "192.0.2.10".parse().unwrap(),
            host,
            port,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn default_allows_public_and_denies_internal() {
        let p = CompiledPolicy::compile(&PolicyDoc::default(), &[]).unwrap();
        assert_eq!(
            p.decide(None, &req(None, 80), ip("93.184.216.34")),
            Decision::Allow
        );
        for a in [
            "127.0.0.1",
            "169.254.169.254",
            "10.0.0.1",
            "::1",
            "::ffff:10.0.0.1",
            "fe80::1",
        ] {
            assert!(
                matches!(
                    p.decide(None, &req(None, 80), ip(a)),
                    Decision::Deny(DenyReason::Protected(_))
                ),
                "{a}"
            );
        }
    }

    #[test]
    fn host_rule_cannot_open_internal_address() {
        let p = CompiledPolicy::compile(
            &doc(r#"
default_action = "deny"
[[rules]]
action = "allow"
hosts = ["*.example.com"]
"#),
            &[],
        )
        .unwrap();
        let r = req(Some("www.example.com"), 443);
        assert_eq!(p.decide(None, &r, ip("93.184.216.34")), Decision::Allow);
        assert!(matches!(
            p.decide(None, &r, ip("169.254.169.254")),
            Decision::Deny(DenyReason::Protected(Protected::LinkLocal))
        ));
        assert_eq!(
            p.decide(None, &req(Some("other.org"), 443), ip("93.184.216.34")),
            Decision::Deny(DenyReason::Default)
        );
        // Named by address only: a host rule does not match.
        assert_eq!(
            p.decide(None, &req(None, 443), ip("93.184.216.34")),
            Decision::Deny(DenyReason::Default)
        );
    }

    #[test]
    fn explicit_cidr_opens_internal_address() {
        let mut d = PolicyDoc::default();
        d.rules
            .push(Rule::allow_destination("127.0.0.0/8".parse().unwrap()));
        let p = CompiledPolicy::compile(&d, &["127.0.0.1:1080".parse().unwrap()]).unwrap();
        assert_eq!(
            p.decide(None, &req(None, 8080), ip("127.0.0.1")),
            Decision::Allow
        );
        assert_eq!(
            p.decide(None, &req(None, 8080), ip("::ffff:127.0.0.1")),
            Decision::Allow
        );
        assert!(matches!(
            p.decide(None, &req(None, 8080), ip("10.0.0.1")),
            Decision::Deny(_)
        ));
        // Never the proxy itself.
        assert_eq!(
            p.decide(None, &req(None, 1080), ip("127.0.0.1")),
            Decision::Deny(DenyReason::OwnEndpoint)
        );
    }

    #[test]
    fn first_match_wins_user_rules_before_global() {
        let hash = crate::password::hash("pw").unwrap();
        let mut d = doc(r#"
[[rules]]
action = "deny"
ports = ["25"]
[[rules]]
action = "allow"
ports = ["1-65535"]
protocols = ["socks5"]
sources = ["192.0.2.0/24"]
"#);
        d.users.push(User {
            name: "alice".into(),
            password_hash: hash,
            enabled: true,
            max_tunnels: Some(2),
            rules: vec![toml::from_str("action = \"allow\"\nports = [\"25\"]").unwrap()],
        });
        let p = CompiledPolicy::compile(&d, &[]).unwrap();
        let (alice, u) = p.user_by_name("alice").unwrap();
        assert_eq!(u.max_tunnels, Some(2));
        let public = ip("198.51.100.7");
        assert_eq!(
            p.decide(Some(alice), &req(None, 25), public),
            Decision::Allow
        );
        assert_eq!(
            p.decide(None, &req(None, 25), public),
            Decision::Deny(DenyReason::Rule {
                user_rule: false,
                index: 0
            })
        );
        let mut http = req(None, 80);
        http.protocol = Protocol::Http;
        http.client = ip("203.0.113.1");
        assert_eq!(p.decide(None, &http, public), Decision::Allow); // default allow
    }

    #[test]
    fn anonymous_clients_default() {
        let p = CompiledPolicy::compile(&PolicyDoc::default(), &[]).unwrap();
        assert!(p.anonymous_allowed(ip("127.0.0.1")));
        assert!(p.anonymous_allowed(ip("::1")));
        assert!(!p.anonymous_allowed(ip("192.0.2.1")));
        let mut d = PolicyDoc::default();
        d.users.push(User {
            name: "bob".into(),
            password_hash: crate::password::hash("x").unwrap(),
            enabled: true,
            max_tunnels: None,
            rules: vec![],
        });
        let p = CompiledPolicy::compile(&d, &[]).unwrap();
        assert!(!p.anonymous_allowed(ip("127.0.0.1")));
    }

    #[test]
    fn invalid_documents_are_rejected() {
        let mut d = PolicyDoc::default();
        let u = User {
            name: "a".into(),
            password_hash: "plaintext".into(),
            enabled: true,
            max_tunnels: None,
            rules: vec![],
        };
        d.users.push(u.clone());
        assert!(matches!(
            CompiledPolicy::compile(&d, &[]),
            Err(PolicyError::PasswordHash { .. })
        ));
        d.users[0].password_hash = crate::password::hash("x").unwrap();
        d.users.push(d.users[0].clone());
        assert_eq!(
            CompiledPolicy::compile(&d, &[]).unwrap_err(),
            PolicyError::DuplicateUser("a".into())
        );
        d.users.truncate(1);
        d.users[0].name = "a:b".into();
        assert!(matches!(
            CompiledPolicy::compile(&d, &[]),
            Err(PolicyError::UserName(_))
        ));
    }
}
