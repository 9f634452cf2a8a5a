//! The console page, embedded in the binary: one HTML file, one script, one
//! style sheet, no framework, no CDN, no build step. The page holds no
//! secret: it asks the operator for the admin token and keeps it in memory
//! only, sending it as the `Authorization: Bearer` header of the admin
//! listener's existing drain / undrain actions.

use http::Response;

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");

/// Only the page's own files; no inline script, no other origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// The page's files by path, with their content types.
fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    match path {
        "/ui" | "/ui/" => Some(("text/html; charset=utf-8", INDEX)),
        "/ui/app.js" => Some(("text/javascript; charset=utf-8", SCRIPT)),
        "/ui/style.css" => Some(("text/css; charset=utf-8", STYLE)),
        _ => None,
    }
}

/// The response for one of the page's files, `None` for any other path.
pub fn serve(path: &str) -> Option<Response<Vec<u8>>> {
    let (content_type, body) = asset(path)?;
    let body = body.as_bytes().to_vec();
    Some(
        Response::builder()
            .status(200)
            .header("content-type", content_type)
            .header("content-length", body.len())
            .header("cache-control", "no-store")
            .header("content-security-policy", CSP)
            .header("x-content-type-options", "nosniff")
            .header("referrer-policy", "no-referrer")
            .body(body)
            .expect("static response parts are valid"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_its_three_files_with_a_strict_policy() {
        for p in ["/ui", "/ui/", "/ui/app.js", "/ui/style.css"] {
            let r = serve(p).unwrap();
            assert_eq!(r.status(), 200);
            assert!(r.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("script-src 'self'"));
        }
        assert!(serve("/ui/../status").is_none());
        assert!(serve("/ui/secret").is_none());
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere_and_embeds_no_secret() {
        // The SVG namespace is a name, not a place the page loads from.
        let script = SCRIPT.replace("http://www.w3.org/2000/svg", "");
        for text in [INDEX, script.as_str(), STYLE] {
            assert!(!text.contains("http://") && !text.contains("https://"));
            assert!(!text.contains("<script>"), "no inline script");
        }
        assert!(INDEX.contains("src=\"/ui/app.js\""));
        assert!(SCRIPT.contains("Authorization"));
    }
}
