use super::*;

fn url(s: &str) -> Url {
    Url::parse(s).expect("test URL")
}

fn read(html: &str) -> Result<LoginPage, NotAFormLogin> {
    read_login_page(html, &url("http://pbx.test/login"))
}

const DJANGO: &str = include_str!("../../../tests/data/login_pages/django_admin.html");
const JUPYTER: &str = include_str!("../../../tests/data/login_pages/jupyterlab.html");

#[test]
fn django_admin_form_names_username_and_password_and_hidden_fields() {
    let page = read_login_page(
        DJANGO,
        &url("http://127.0.0.1:8000/admin/login/?next=/admin/"),
    )
    .expect("a form login");
    let f = &page.form;
    assert_eq!(f.path, "/admin/login/");
    assert_eq!(f.username_field.as_deref(), Some("username"));
    assert_eq!(f.username_hint, UsernameHint::Autocomplete);
    assert_eq!(f.password_field, "password");
    assert_eq!(f.password_inputs, 1);
    assert_eq!(
        f.other_fields,
        vec![
            ("csrfmiddlewaretoken".to_string(), "hidden".to_string()),
            ("next".to_string(), "hidden".to_string())
        ]
    );
    assert_eq!(f.enctype, None);
    let paths: Vec<&str> = page.assets.iter().map(Url::path).collect();
    assert!(paths.contains(&"/static/admin/css/base.css"), "{paths:?}");
    assert!(paths.iter().all(|p| p.starts_with("/static/")), "{paths:?}");
}

#[test]
fn jupyter_form_has_only_a_password_and_its_action_query_is_dropped() {
    let page = read_login_page(JUPYTER, &url("http://127.0.0.1:8888/login?next=%2Flab"))
        .expect("a form login");
    let f = &page.form;
    assert_eq!(f.action.as_str(), "http://127.0.0.1:8888/login?next=%2Flab");
    assert_eq!(f.path, "/login");
    assert_eq!(f.username_field, None);
    assert_eq!(f.username_hint, UsernameHint::Absent);
    assert_eq!(f.password_field, "password");
    assert_eq!(
        f.other_fields,
        vec![("_xsrf".to_string(), "hidden".to_string())]
    );
    // favicon, three stylesheets and the logo, all under /static/.
    assert_eq!(page.assets.len(), 5, "{:?}", page.assets);
    assert!(page.assets.iter().all(|u| u.path().starts_with("/static/")));
}

#[test]
fn script_driven_form_without_names_is_not_a_form_login() {
    let html = r#"<div id=app><input id=user><input id=pw type=password>
            <button onclick="login()">Sign in</button></div>"#;
    assert_eq!(read(html), Err(NotAFormLogin::PasswordOutsideForm));
    let html = r#"<form onsubmit="return login()"><input id=user>
            <input id=pw type=password><button>Sign in</button></form>"#;
    // A form without method is GET: that is what is wrong first.
    assert_eq!(read(html), Err(NotAFormLogin::NotPost("GET".into())));
    let html = r#"<form method=post onsubmit="return login()"><input id=user>
            <input id=pw type=password><button>Sign in</button></form>"#;
    assert_eq!(read(html), Err(NotAFormLogin::UnnamedPassword));
    let html = r#"<form method=post action="javascript:void(0)"><input name=u>
            <input name=p type=password></form>"#;
    assert_eq!(read(html), Err(NotAFormLogin::ScriptAction));
}

#[test]
fn get_form_is_refused_by_its_method() {
    let html = r#"<form method="GET" action="/auth"><input name=user>
            <input name=pass type=password></form>"#;
    assert_eq!(read(html), Err(NotAFormLogin::NotPost("GET".into())));
}

#[test]
fn page_without_password_input_is_not_a_login_page() {
    let html = r#"<form method=post action=/search><input name=q></form>"#;
    assert_eq!(read(html), Err(NotAFormLogin::NoPasswordInput));
    assert_eq!(read(""), Err(NotAFormLogin::NoPasswordInput));
}

#[test]
fn of_two_forms_the_one_with_the_password_is_the_login() {
    let html = r#"<form method=post action=/search><input name=q><button>Go</button></form>
            <form method=post action=/session><input type=hidden name=token value=SECRET>
            <input type=email name=mail><input type=password name=pw>
            <input type=checkbox name=remember><input type=submit name=go value=Login></form>"#;
    let f = read(html).expect("login").form;
    assert_eq!(f.path, "/session");
    assert_eq!(f.username_field.as_deref(), Some("mail"));
    assert_eq!(f.password_field, "pw");
    assert_eq!(
        f.other_fields,
        vec![
            ("token".to_string(), "hidden".to_string()),
            ("remember".to_string(), "checkbox".to_string())
        ]
    );
}

#[test]
fn a_sign_up_form_next_to_the_login_form_is_not_chosen() {
    let html = r#"<form method=post action=/register><input name=email>
            <input type=password name=new1><input type=password name=new2></form>
            <form method=post action=/login><input name=user><input type=password name=pass></form>"#;
    let f = read(html).expect("login").form;
    assert_eq!(f.path, "/login");
    assert_eq!(f.password_field, "pass");
}

#[test]
fn absolute_same_origin_action_gives_its_path() {
    let html = r#"<form method=post action="http://pbx.test/cgi-bin/auth.cgi?x=1">
            <input name=user><input type=password name=pass></form>"#;
    let f = read(html).expect("login").form;
    assert_eq!(f.path, "/cgi-bin/auth.cgi");
}

#[test]
fn off_origin_action_is_refused() {
    for action in [
        "https://pbx.test/login",
        "http://pbx.test:8080/login",
        "//sso.example.com/login",
        "http://sso.example.com/login",
    ] {
        let html = format!(
            r#"<form method=post action="{action}"><input name=u><input type=password name=p></form>"#
        );
        assert!(
            matches!(read(&html), Err(NotAFormLogin::OffOriginAction(_))),
            "{action}"
        );
    }
}

#[test]
fn empty_action_is_the_page_itself_and_base_href_is_honoured() {
    let html = r#"<form method=post action=""><input name=u><input type=password name=p></form>"#;
    assert_eq!(read(html).expect("login").form.path, "/login");
    let html = r#"<form method=post><input name=u><input type=password name=p></form>"#;
    assert_eq!(read(html).expect("login").form.path, "/login");
    let html = r#"<head><base href="/app/"><link rel=stylesheet href="css/a.css"></head>
            <form method=post action="auth"><input name=u><input type=password name=p></form>"#;
    let page = read(html).expect("login");
    assert_eq!(page.form.path, "/app/auth");
    assert_eq!(page.assets[0].path(), "/app/css/a.css");
}

#[test]
fn default_submit_button_overrides_action_and_method() {
    let html = r#"<form action=/search><input name=u><input type=password name=p>
            <button formaction="/do-login" formmethod=post>Sign in</button>
            <button formaction="/other">Other</button></form>"#;
    let f = read(html).expect("login").form;
    assert_eq!(f.path, "/do-login");
}

#[test]
fn hidden_honeypot_and_disabled_inputs_are_not_the_username() {
    let html = r#"<form method=post><input name=login>
            <div style="display: none"><input name=website></div>
            <input name=nick hidden><input name=off disabled>
            <input type=password name=pw></form>"#;
    let f = read(html).expect("login").form;
    assert_eq!(f.username_field.as_deref(), Some("login"));
    assert_eq!(f.username_hint, UsernameHint::BeforePassword);
}

#[test]
fn unknown_input_type_counts_as_text() {
    let html = r#"<form method=post><input type=userid name=uid>
            <input type=password name=pw></form>"#;
    let f = read(html).expect("login").form;
    assert_eq!(f.username_field.as_deref(), Some("uid"));
}

#[test]
fn form_inside_a_table_still_owns_the_inputs_after_it() {
    // The parser closes the form at once; the browser still sends the
    // inputs with it.
    let html = r#"<table><form method=post action=/cgi/login>
            <tr><td><input name=user></td></tr>
            <tr><td><input type=password name=pass></td></tr></form></table>"#;
    let f = read(html).expect("login").form;
    assert_eq!(f.path, "/cgi/login");
    assert_eq!(f.username_field.as_deref(), Some("user"));
}

#[test]
fn form_attribute_associates_inputs_outside_the_form() {
    let html = r#"<form id=f method=post action=/auth></form>
            <input form=f name=user><input form=f type=password name=pass>"#;
    let f = read(html).expect("login").form;
    assert_eq!(f.path, "/auth");
    assert_eq!(f.username_field.as_deref(), Some("user"));
}

#[test]
fn multipart_encoding_is_reported() {
    let html = r#"<form method=post enctype="multipart/form-data"><input name=u>
            <input type=password name=p></form>"#;
    let f = read(html).expect("login").form;
    assert_eq!(f.enctype.as_deref(), Some("multipart/form-data"));
}

#[test]
fn assets_skip_other_sites_data_urls_and_links_that_load_nothing() {
    let html = r#"<head><link rel=canonical href=/home><link rel=stylesheet href=/css/a.css>
            <link rel="shortcut icon" href="/favicon.ico"><script src="https://cdn.example/x.js"></script>
            <img src="data:image/png;base64,AAAA"><script src="//cdn.example/y.js"></script>
            <script>inline()</script><img src="/img/logo.png"><img src="/img/logo.png"></head>
            <form method=post><input name=u><input type=password name=p></form>"#;
    let paths: Vec<String> = read(html)
        .expect("login")
        .assets
        .iter()
        .map(|u| u.path().to_string())
        .collect();
    assert_eq!(paths, ["/css/a.css", "/favicon.ico", "/img/logo.png"]);
}

#[test]
fn odd_markup_never_panics() {
    for html in [
        "<form",
        "<form method=post><input type=password name=",
        "<<<>>><form method=post action='\u{0}'><input type=password name=p>",
        "<table><form method=post><tr><td><input type=password name=p>",
        "<input form=nowhere type=password name=p>",
        "<form method=post action='http://[::1'><input type=password name=p></form>",
        "\u{feff}<html><body><form method=post><input type=PASSWORD name=\"a\"b\"></form>",
    ] {
        let _ = read(html);
    }
}
