//! The path guesses: which prefixes a signed-out browser needs
//! (`anonymous_paths`), where the logout may be, and how to tell a logout
//! path that exists from a dashboard that answers every path alike.

use crate::auth::login::segment_prefix;
use url::Url;

/// `login.anonymous_paths` and how they were found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnonymousPaths {
    /// Sorted, without duplicates; the login page's path is one of them.
    pub paths: Vec<String>,
    /// Each prefix taken from assets, with one asset it covers.
    pub from_assets: Vec<(String, String)>,
    /// Prefixes whose name is not a usual asset directory: everything under
    /// them becomes reachable without signing in, so the operator must look.
    pub unusual: Vec<String>,
    /// Assets not covered: files at the top level (`/favicon.ico`) and
    /// assets whose directory also holds the login page. Adding a prefix for
    /// them could open far more than an asset.
    pub not_added: Vec<String>,
}

/// Directory names that hold assets in the dashboards gatehouse meets.
const ASSET_DIRECTORIES: &[&str] = &[
    "static",
    "assets",
    "asset",
    "css",
    "js",
    "img",
    "images",
    "image",
    "icons",
    "fonts",
    "font",
    "media",
    "dist",
    "build",
    "public",
    "res",
    "resources",
    "vendor",
    "lib",
    "libs",
    "scripts",
    "styles",
    "style",
    "theme",
    "themes",
    "skin",
    "skins",
    "webjars",
    "_next",
    "_nuxt",
];

/// The login page path plus the first-segment directory (`/static/`) of
/// every same-origin asset the login page loads. Never "/" (gatehouse
/// refuses it: the whole dashboard would be public).
pub fn anonymous_paths(login_page_path: &str, assets: &[Url]) -> AnonymousPaths {
    let mut out = AnonymousPaths {
        paths: vec![login_page_path.to_string()],
        ..AnonymousPaths::default()
    };
    for asset in assets {
        let Ok(path) = crate::access::normalise(asset.path()) else {
            continue;
        };
        let path = path.into_string();
        if segment_prefix(&path, login_page_path) {
            continue;
        }
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let prefix = match segments.as_slice() {
            [] | [_] => None,
            [first, ..] => {
                let first = format!("/{first}/");
                if segment_prefix(login_page_path, &first) {
                    // `/admin/` would open the login page's whole area: use
                    // the asset's own directory, if that does not too.
                    let dir = path[..path.rfind('/').unwrap_or(0) + 1].to_string();
                    (!segment_prefix(login_page_path, &dir)).then_some(dir)
                } else {
                    Some(first)
                }
            }
        };
        let Some(prefix) = prefix else {
            if !out.not_added.contains(&path) {
                out.not_added.push(path);
            }
            continue;
        };
        if out.paths.contains(&prefix) {
            continue;
        }
        let usual = prefix.split('/').any(|seg| {
            ASSET_DIRECTORIES
                .iter()
                .any(|d| d.eq_ignore_ascii_case(seg))
        });
        if !usual {
            out.unusual.push(prefix.clone());
        }
        out.from_assets.push((prefix.clone(), path));
        out.paths.push(prefix);
    }
    out.paths.sort();
    out
}

/// Where a logout may be, most likely first: next to the login (`/admin/login/`
/// → `/admin/logout/`, `/login.php` → `/logout.php`), then common spellings.
pub fn logout_candidates(login_paths: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = login_paths.iter().filter_map(|p| sibling(p)).collect();
    for common in [
        "/logout",
        "/logout/",
        "/signout",
        "/sign_out",
        "/accounts/logout/",
    ] {
        out.push(common.to_string());
    }
    let mut seen = Vec::new();
    out.retain(|p| {
        let new = !seen.contains(p);
        seen.push(p.clone());
        new
    });
    out
}

fn sibling(login_path: &str) -> Option<String> {
    const PAIRS: &[(&str, &str)] = &[
        ("login", "logout"),
        ("Login", "Logout"),
        ("LOGIN", "LOGOUT"),
        ("logon", "logoff"),
        ("Logon", "Logoff"),
        ("signin", "signout"),
        ("SignIn", "SignOut"),
        ("Signin", "Signout"),
        ("sign_in", "sign_out"),
        ("sign-in", "sign-out"),
    ];
    let trimmed = login_path.trim_end_matches('/');
    let slash = &login_path[trimmed.len()..];
    let cut = trimmed.rfind('/')? + 1;
    let (dir, last) = trimmed.split_at(cut);
    let (from, to) = PAIRS.iter().find(|(from, _)| last.contains(from))?;
    Some(format!("{dir}{}{slash}", last.replacen(from, to, 1)))
}

/// A made-up path next to `candidate`, to learn how the dashboard answers
/// paths that do not exist (many send every unknown path to the login).
pub fn made_up_sibling(candidate: &str, nonce: &str) -> String {
    let trimmed = candidate.trim_end_matches('/');
    let slash = &candidate[trimmed.len()..];
    let dir = &trimmed[..trimmed.rfind('/').map_or(0, |i| i + 1)];
    let dir = if dir.is_empty() { "/" } else { dir };
    format!("{dir}gatehouse-probe-{nonce}{slash}")
}

/// The first line of a dashboard's answer to a GET without a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// The Location header as sent, if any.
    pub location: Option<String>,
}

impl Answer {
    /// The answer with the requested path taken out of the Location's path
    /// (`/x/` for `/x` is "itself plus a slash"), so the answers of two
    /// different paths can be compared.
    fn shape(&self, requested: &str) -> (u16, Option<String>) {
        let location = self.location.as_deref().map(|l| {
            let path = location_path(l);
            match path.strip_prefix(requested) {
                Some(rest) => format!("(itself){rest}"),
                None => path.to_string(),
            }
        });
        (self.status, location)
    }

    /// The Location's path, for comments.
    pub fn location_path(&self) -> Option<&str> {
        self.location.as_deref().map(location_path)
    }
}

/// What the logout probing found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogoutFinding {
    /// `path` answered differently from a made-up path: it exists.
    Found { path: String, answer: Answer },
    /// `path` answered, but exactly as a made-up path does.
    Unconfirmed { path: String, answer: Answer },
    /// Every candidate answered 404 (or not at all).
    Missing { tried: Vec<String> },
}

impl LogoutFinding {
    /// The path to print.
    pub fn path(&self) -> &str {
        match self {
            Self::Found { path, .. } | Self::Unconfirmed { path, .. } => path,
            Self::Missing { .. } => "/logout",
        }
    }
}

/// Does `candidate` exist, judged by its answer and, when the dashboard does
/// not answer 404 to unknown paths, by a made-up path's answer? `None`: it
/// answered 404.
pub fn judge(
    candidate: &str,
    answer: &Answer,
    made_up: Option<(&str, &Answer)>,
) -> Option<LogoutFinding> {
    if answer.status == 404 {
        return None;
    }
    let found = LogoutFinding::Found {
        path: candidate.to_string(),
        answer: answer.clone(),
    };
    let Some((made_up_path, made_up_answer)) = made_up else {
        return Some(found);
    };
    if made_up_answer.status != 404 && made_up_answer.shape(made_up_path) == answer.shape(candidate)
    {
        return Some(LogoutFinding::Unconfirmed {
            path: candidate.to_string(),
            answer: answer.clone(),
        });
    }
    Some(found)
}

/// The path of a Location value: absolute URLs lose scheme and host, every
/// value loses its query and fragment.
fn location_path(location: &str) -> &str {
    let rest = match location.find("://") {
        Some(i) => {
            let after = &location[i + 3..];
            after.find('/').map_or("/", |j| &after[j..])
        }
        None => location,
    };
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    &rest[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(paths: &[&str]) -> Vec<Url> {
        paths
            .iter()
            .map(|p| {
                Url::parse("http://pbx.test")
                    .and_then(|b| b.join(p))
                    .expect("url")
            })
            .collect()
    }

    #[test]
    fn asset_directories_become_first_segment_prefixes() {
        let a = anonymous_paths(
            "/admin/login/",
            &urls(&[
                "/static/admin/css/base.css",
                "/static/admin/js/theme.js",
                "/assets/app.js",
            ]),
        );
        assert_eq!(a.paths, ["/admin/login/", "/assets/", "/static/"]);
        assert!(a.unusual.is_empty());
        assert!(a.not_added.is_empty());
    }

    #[test]
    fn never_slash_and_never_the_login_pages_own_area() {
        let a = anonymous_paths(
            "/admin/login",
            &urls(&[
                "/favicon.ico",
                "/admin/static/a.css",
                "/admin/b.css",
                "/admin/login/c.css",
            ]),
        );
        assert_eq!(a.paths, ["/admin/login", "/admin/static/"]);
        assert_eq!(a.not_added, ["/favicon.ico", "/admin/b.css"]);
        assert!(!a.paths.contains(&"/".to_string()));
    }

    #[test]
    fn unusual_asset_directories_are_flagged() {
        let a = anonymous_paths("/login", &urls(&["/app/main.js", "/Static/x.css"]));
        assert_eq!(a.paths, ["/Static/", "/app/", "/login"]);
        assert_eq!(a.unusual, ["/app/"]);
    }

    #[test]
    fn logout_candidates_start_next_to_the_login() {
        assert_eq!(
            logout_candidates(&["/admin/login/"]),
            [
                "/admin/logout/",
                "/logout",
                "/logout/",
                "/signout",
                "/sign_out",
                "/accounts/logout/"
            ]
        );
        assert_eq!(logout_candidates(&["/login", "/login"])[0], "/logout");
        assert_eq!(
            logout_candidates(&["/cgi-bin/Login.cgi"])[0],
            "/cgi-bin/Logout.cgi"
        );
        assert_eq!(logout_candidates(&["/auth/sign-in"])[0], "/auth/sign-out");
        assert_eq!(logout_candidates(&["/j_security_check"])[0], "/logout");
    }

    #[test]
    fn made_up_paths_sit_next_to_the_candidate() {
        assert_eq!(made_up_sibling("/logout", "ab"), "/gatehouse-probe-ab");
        assert_eq!(
            made_up_sibling("/admin/logout/", "ab"),
            "/admin/gatehouse-probe-ab/"
        );
    }

    fn answer(status: u16, location: Option<&str>) -> Answer {
        Answer {
            status,
            location: location.map(str::to_string),
        }
    }

    #[test]
    fn a_405_logout_exists_where_unknown_paths_redirect() {
        let made_up = answer(302, Some("/admin/login/?next=/admin/gatehouse-probe-x/"));
        let found = judge(
            "/admin/logout/",
            &answer(405, None),
            Some(("/admin/gatehouse-probe-x/", &made_up)),
        );
        assert!(
            matches!(found, Some(LogoutFinding::Found { .. })),
            "{found:?}"
        );
    }

    #[test]
    fn a_path_answered_like_any_unknown_path_is_unconfirmed() {
        let made_up = answer(302, Some("/login"));
        let found = judge(
            "/logout",
            &answer(302, Some("/login")),
            Some(("/gatehouse-probe-x", &made_up)),
        );
        assert!(
            matches!(found, Some(LogoutFinding::Unconfirmed { .. })),
            "{found:?}"
        );
        // Slash-appending redirects name the requested path itself.
        let made_up = answer(301, Some("http://pbx.test/x/gatehouse-probe-y/"));
        let found = judge(
            "/x/logout",
            &answer(301, Some("/x/logout/")),
            Some(("/x/gatehouse-probe-y", &made_up)),
        );
        assert!(
            matches!(found, Some(LogoutFinding::Unconfirmed { .. })),
            "{found:?}"
        );
    }

    #[test]
    fn not_found_is_missing_and_anything_else_beside_a_404_exists() {
        let made_up = answer(404, None);
        assert_eq!(
            judge("/logout", &answer(404, None), Some(("/p", &made_up))),
            None
        );
        let found = judge("/logout", &answer(200, None), Some(("/p", &made_up)));
        assert!(matches!(found, Some(LogoutFinding::Found { .. })));
        let found = judge("/logout", &answer(302, Some("/login")), None);
        assert!(matches!(found, Some(LogoutFinding::Found { .. })));
    }
}
