//! Reading a login page: which form carries the password, where it is sent,
//! which fields it names, and which assets the page loads. Pure functions of
//! the HTML and the page's URL; the HTML5 parser (html5ever, through
//! `scraper`) builds the same tree a browser would, so odd markup is handled
//! as browsers handle it and never makes this panic.

use scraper::{ElementRef, Html};
use std::collections::HashMap;
use url::Url;

/// The login form found on a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginForm {
    /// Where the form is sent: its `action` (or the default submit button's
    /// `formaction`) resolved against the page, query included.
    pub action: Url,
    /// The path of `action` in gatehouse's normal spelling: `login.path`.
    pub path: String,
    /// The username input's name; `None` when the form asks only for a password.
    pub username_field: Option<String>,
    /// How the username input was recognised.
    pub username_hint: UsernameHint,
    /// The password input's name.
    pub password_field: String,
    /// Password inputs in the form (a sign-up or change form has two or more).
    pub password_inputs: usize,
    /// Further named fields the form sends, with their kind ("hidden",
    /// "checkbox", …): CSRF tokens, return-to targets, "remember me". Their
    /// values are never kept.
    pub other_fields: Vec<(String, String)>,
    /// The form's encoding when it is not `application/x-www-form-urlencoded`.
    pub enctype: Option<String>,
}

/// How the username input was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsernameHint {
    /// A text input marked `autocomplete="username"` (or "email").
    Autocomplete,
    /// The last visible text input before the password input.
    BeforePassword,
    /// There is none.
    Absent,
}

/// What a login page says, as far as gatehouse's `[login]` is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginPage {
    pub form: LoginForm,
    /// Same-origin stylesheets, icons, scripts and images the page loads.
    pub assets: Vec<Url>,
}

/// Why a page that was fetched is not a form login gatehouse can watch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAFormLogin {
    #[error("no <input type=password>")]
    NoPasswordInput,
    #[error("the password input is in no <form>: the page signs in with JavaScript")]
    PasswordOutsideForm,
    #[error("the password input has no name: JavaScript reads it and sends the login itself")]
    UnnamedPassword,
    #[error("the form's action is a javascript: URL: the page signs in with JavaScript")]
    ScriptAction,
    #[error("the form with the password is sent with {0}, not POST")]
    NotPost(String),
    #[error("the form is sent to another origin ({0}): gatehouse sees only logins to the dashboard it fronts")]
    OffOriginAction(String),
    #[error("the form's action {action:?} is not a URL ({reason})")]
    BadAction { action: String, reason: String },
    #[error("the form is sent to {path:?}, a path gatehouse refuses to forward ({reason})")]
    UnusableAction { path: String, reason: String },
}

/// Find the login form on `html`, fetched from `page_url`.
pub fn read_login_page(html: &str, page_url: &Url) -> Result<LoginPage, NotAFormLogin> {
    let doc = Html::parse_document(html);
    let elements: Vec<ElementRef<'_>> = doc.root_element().descendent_elements().collect();
    let order: HashMap<_, usize> = elements
        .iter()
        .enumerate()
        .map(|(i, e)| (e.id(), i))
        .collect();
    let position = |e: &ElementRef<'_>| order.get(&e.id()).copied();
    let base = base_url(&elements, page_url);
    let forms: Vec<ElementRef<'_>> = elements
        .iter()
        .copied()
        .filter(|e| e.value().name() == "form")
        .collect();
    // Every form control with the form that owns it (HTML §4.10.17.3).
    let controls: Vec<(ElementRef<'_>, Option<usize>)> = elements
        .iter()
        .copied()
        .filter(|e| is_control(e))
        .map(|e| (e, form_owner(e, &forms, &position)))
        .collect();
    let passwords: Vec<&(ElementRef<'_>, Option<usize>)> =
        controls.iter().filter(|(e, _)| is_password(e)).collect();
    if passwords.is_empty() {
        return Err(NotAFormLogin::NoPasswordInput);
    }

    // The login form: prefer one that is POSTed, then one with a single
    // password input (sign-up and change-password forms have two or three),
    // then the first in the page.
    let mut candidates: Vec<usize> = passwords.iter().filter_map(|(_, f)| *f).collect();
    candidates.dedup();
    let password_count = |form: usize| passwords.iter().filter(|(_, f)| *f == Some(form)).count();
    let submission = |form: usize| Submission::of(forms[form], form, &controls);
    let Some(form_index) = candidates.iter().copied().min_by_key(|&f| {
        (
            !submission(f).is_post(),
            password_count(f) != 1,
            position(&forms[f]).unwrap_or(usize::MAX),
        )
    }) else {
        return Err(NotAFormLogin::PasswordOutsideForm);
    };
    let sub = submission(form_index);
    if !sub.is_post() {
        return Err(NotAFormLogin::NotPost(sub.method.to_ascii_uppercase()));
    }
    let action = sub.action_url(&base, page_url)?;
    let path = crate::access::normalise(action.path())
        .map(|p| p.into_string())
        .map_err(|e| NotAFormLogin::UnusableAction {
            path: action.path().to_string(),
            reason: e.to_string(),
        })?;

    let own: Vec<ElementRef<'_>> = controls
        .iter()
        .filter(|(_, f)| *f == Some(form_index))
        .map(|(e, _)| *e)
        .collect();
    let Some(password) = own.iter().find(|e| is_password(e)) else {
        return Err(NotAFormLogin::PasswordOutsideForm);
    };
    let Some(password_field) = name_of(password) else {
        return Err(NotAFormLogin::UnnamedPassword);
    };
    let password_at = position(password).unwrap_or(0);
    let texts: Vec<&ElementRef<'_>> = own
        .iter()
        .filter(|e| is_text_like(e) && is_visible(e) && !is_disabled(e) && name_of(e).is_some())
        .collect();
    let by_autocomplete = texts.iter().find(|e| {
        e.value().attr("autocomplete").is_some_and(|a| {
            a.split_ascii_whitespace()
                .any(|t| t.eq_ignore_ascii_case("username") || t.eq_ignore_ascii_case("email"))
        })
    });
    let before_password = texts
        .iter()
        .rfind(|e| position(e).unwrap_or(usize::MAX) < password_at);
    let (username, username_hint) = match (by_autocomplete, before_password) {
        (Some(e), _) => (name_of(e), UsernameHint::Autocomplete),
        (None, Some(e)) => (name_of(e), UsernameHint::BeforePassword),
        (None, None) => (None, UsernameHint::Absent),
    };

    let mut other_fields = Vec::new();
    for e in &own {
        let Some(name) = name_of(e) else { continue };
        if Some(&name) == username.as_ref() || name == password_field || is_disabled(e) {
            continue;
        }
        let kind = control_kind(e);
        // Buttons send their name only when they are the one clicked.
        if matches!(kind.as_str(), "submit" | "image" | "button" | "reset") {
            continue;
        }
        if !other_fields.iter().any(|(n, _)| *n == name) {
            other_fields.push((name, kind));
        }
    }
    let enctype = sub
        .enctype
        .filter(|t| !t.eq_ignore_ascii_case("application/x-www-form-urlencoded"));

    Ok(LoginPage {
        form: LoginForm {
            action,
            path,
            username_field: username,
            username_hint,
            password_field,
            password_inputs: password_count(form_index),
            other_fields,
            enctype,
        },
        assets: assets(&elements, &base, page_url),
    })
}

/// How a form is sent when the user presses Enter: the form's own method,
/// action and encoding, overridden by its default (first) submit button.
struct Submission {
    method: String,
    action: Option<String>,
    enctype: Option<String>,
}

impl Submission {
    fn of(
        form: ElementRef<'_>,
        index: usize,
        controls: &[(ElementRef<'_>, Option<usize>)],
    ) -> Self {
        let default_button = controls
            .iter()
            .find(|(e, f)| *f == Some(index) && is_submit_button(e))
            .map(|(e, _)| *e);
        let pick = |button_attr: &str, form_attr: &str| {
            default_button
                .and_then(|b| b.value().attr(button_attr))
                .or_else(|| form.value().attr(form_attr))
                .map(|v| v.trim().to_string())
        };
        // An absent or invalid method is GET (HTML §4.10.18.6).
        let method = match pick("formmethod", "method") {
            Some(m) if m.eq_ignore_ascii_case("post") => "post".to_string(),
            Some(m) if m.eq_ignore_ascii_case("dialog") => "dialog".to_string(),
            _ => "get".to_string(),
        };
        Self {
            method,
            action: pick("formaction", "action"),
            enctype: pick("formenctype", "enctype").filter(|t| !t.is_empty()),
        }
    }

    fn is_post(&self) -> bool {
        self.method == "post"
    }

    /// The action resolved: absent or empty means the page itself; anything
    /// else is resolved against the document's base URL.
    fn action_url(&self, base: &Url, page_url: &Url) -> Result<Url, NotAFormLogin> {
        let action = match self.action.as_deref() {
            None | Some("") => page_url.clone(),
            Some(a) => match base.join(a) {
                Ok(u) => u,
                Err(e) => {
                    return Err(NotAFormLogin::BadAction {
                        action: a.to_string(),
                        reason: e.to_string(),
                    })
                }
            },
        };
        if action.scheme() == "javascript" {
            return Err(NotAFormLogin::ScriptAction);
        }
        if action.origin() != page_url.origin() {
            return Err(NotAFormLogin::OffOriginAction(action.to_string()));
        }
        Ok(action)
    }
}

/// The document's base URL: the first `<base href>`, else the page's own.
fn base_url(elements: &[ElementRef<'_>], page_url: &Url) -> Url {
    elements
        .iter()
        .filter(|e| e.value().name() == "base")
        .find_map(|e| e.value().attr("href"))
        .and_then(|href| page_url.join(href).ok())
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .unwrap_or_else(|| page_url.clone())
}

/// Same-origin stylesheets, icons, preloads, scripts and images, in page order.
fn assets(elements: &[ElementRef<'_>], base: &Url, page_url: &Url) -> Vec<Url> {
    const LOADING_RELS: &[&str] = &[
        "stylesheet",
        "icon",
        "apple-touch-icon",
        "apple-touch-icon-precomposed",
        "mask-icon",
        "preload",
        "modulepreload",
        "manifest",
    ];
    let mut found: Vec<Url> = Vec::new();
    for e in elements {
        let v = e.value();
        let reference = match v.name() {
            "link" => {
                let rel = v.attr("rel").unwrap_or("");
                let loads = rel
                    .split_ascii_whitespace()
                    .any(|r| LOADING_RELS.iter().any(|l| r.eq_ignore_ascii_case(l)));
                if loads {
                    v.attr("href")
                } else {
                    None
                }
            }
            "script" | "img" => v.attr("src"),
            _ => None,
        };
        let Some(reference) = reference.map(str::trim).filter(|r| !r.is_empty()) else {
            continue;
        };
        let Ok(url) = base.join(reference) else {
            continue;
        };
        // data: and blob: URLs, other schemes and other sites load nothing
        // through gatehouse.
        if url.origin() != page_url.origin() || !found.iter().all(|f| f.path() != url.path()) {
            continue;
        }
        found.push(url);
    }
    found
}

/// The form that owns control `e`: the one its `form` attribute names, else
/// its nearest `<form>` ancestor, else — the table case — a form the parser
/// had to close at once.
///
/// Old dashboards often write `<table><form><tr><td><input …>`. A `<form>`
/// directly inside a table is inserted empty and popped (HTML §13.2.6.4.9),
/// but the parser's form element pointer keeps associating the inputs that
/// follow with it, so a browser still submits them with that form. The tree
/// does not show that association, so it is rebuilt here: an empty form
/// whose parent is a table part owns the controls that follow it in the
/// same table.
fn form_owner(
    e: ElementRef<'_>,
    forms: &[ElementRef<'_>],
    position: &dyn Fn(&ElementRef<'_>) -> Option<usize>,
) -> Option<usize> {
    if let Some(id) = e.value().attr("form") {
        // A `form` attribute naming no form leaves the control without one.
        return forms.iter().position(|f| f.value().id() == Some(id));
    }
    if let Some(ancestor) = e
        .ancestors()
        .filter_map(ElementRef::wrap)
        .find(|a| a.value().name() == "form")
    {
        return forms.iter().position(|f| f.id() == ancestor.id());
    }
    let at = position(&e)?;
    let table = e
        .ancestors()
        .filter_map(ElementRef::wrap)
        .find(|a| a.value().name() == "table")?;
    forms
        .iter()
        .enumerate()
        .filter(|(_, f)| {
            position(f).is_some_and(|i| i < at)
                && f.parent().and_then(ElementRef::wrap).is_some_and(|p| {
                    matches!(
                        p.value().name(),
                        "table" | "tbody" | "thead" | "tfoot" | "tr"
                    )
                })
                && f.ancestors()
                    .filter_map(ElementRef::wrap)
                    .find(|a| a.value().name() == "table")
                    .is_some_and(|t| t.id() == table.id())
                && !f.descendent_elements().any(|d| is_control(&d))
        })
        .map(|(i, _)| i)
        .next_back()
}

fn is_control(e: &ElementRef<'_>) -> bool {
    matches!(e.value().name(), "input" | "select" | "textarea" | "button")
}

fn input_type(e: &ElementRef<'_>) -> String {
    e.value()
        .attr("type")
        .map(|t| t.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

fn is_password(e: &ElementRef<'_>) -> bool {
    e.value().name() == "input" && input_type(e) == "password"
}

fn is_submit_button(e: &ElementRef<'_>) -> bool {
    match e.value().name() {
        // A button's missing or invalid type is "submit".
        "button" => !matches!(input_type(e).as_str(), "button" | "reset"),
        "input" => matches!(input_type(e).as_str(), "submit" | "image"),
        _ => false,
    }
}

/// Input types a browser knows; any other value (or none) is a text input.
const KNOWN_INPUT_TYPES: &[&str] = &[
    "hidden",
    "text",
    "search",
    "tel",
    "url",
    "email",
    "password",
    "date",
    "month",
    "week",
    "time",
    "datetime-local",
    "number",
    "range",
    "color",
    "checkbox",
    "radio",
    "file",
    "submit",
    "image",
    "reset",
    "button",
];

fn is_text_like(e: &ElementRef<'_>) -> bool {
    if e.value().name() != "input" {
        return false;
    }
    let t = input_type(e);
    matches!(t.as_str(), "" | "text" | "email" | "tel") || !KNOWN_INPUT_TYPES.contains(&t.as_str())
}

fn control_kind(e: &ElementRef<'_>) -> String {
    match e.value().name() {
        "input" => {
            let t = input_type(e);
            if t.is_empty() || !KNOWN_INPUT_TYPES.contains(&t.as_str()) {
                "text".to_string()
            } else {
                t
            }
        }
        "button" if is_submit_button(e) => "submit".to_string(),
        other => other.to_string(),
    }
}

fn name_of(e: &ElementRef<'_>) -> Option<String> {
    e.value()
        .attr("name")
        .filter(|n| !n.is_empty())
        .map(str::to_string)
}

fn is_disabled(e: &ElementRef<'_>) -> bool {
    e.value().attr("disabled").is_some()
        || e.ancestors()
            .filter_map(ElementRef::wrap)
            .any(|a| a.value().name() == "fieldset" && a.value().attr("disabled").is_some())
}

/// Not a hidden input, and neither it nor an ancestor is hidden by the
/// `hidden` attribute or an inline `display:none` / `visibility:hidden`
/// (honeypot fields that catch bots are hidden this way).
fn is_visible(e: &ElementRef<'_>) -> bool {
    if input_type(e) == "hidden" {
        return false;
    }
    let hides = |el: &ElementRef<'_>| {
        let v = el.value();
        let style: String = v
            .attr("style")
            .unwrap_or("")
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect::<String>()
            .to_ascii_lowercase();
        v.attr("hidden").is_some()
            || style.contains("display:none")
            || style.contains("visibility:hidden")
    };
    !hides(e)
        && !e
            .ancestors()
            .filter_map(ElementRef::wrap)
            .any(|a| hides(&a))
}

#[cfg(test)]
mod tests;
