//! The fleet page: one static HTML file (CSS and JS inline, no build step,
//! no external resource) that shows `GET /admin/fleet` live and drives the
//! admin API's load / unload / pin / unpin. It owns the page only; the
//! route that serves it (and exempts it from the API key, since a browser
//! cannot send one on navigation; the page sends the key on its own
//! requests) belongs to the HTTP layer.

/// The page, as served (`text/html; charset=utf-8`).
pub const FLEET_HTML: &str = include_str!("fleet.html");

#[cfg(test)]
mod tests {
    use super::FLEET_HTML;

    /// Everything the page needs is inside it: no URL to another host, no
    /// external script, style, font or image.
    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        let lower = FLEET_HTML.to_ascii_lowercase();
        for needle in [
            "http://",
            "https://",
            "//cdn",
            "<script src",
            "<link rel=\"stylesheet\"",
            "@import",
            "url(",
        ] {
            assert!(!lower.contains(needle), "the page mentions {needle}");
        }
        assert!(lower.contains("content-security-policy"));
        assert!(lower.contains("default-src 'none'"));
        assert!(lower.contains("connect-src 'self'"));
    }

    /// It reads the fleet and calls the four admin actions.
    #[test]
    fn the_page_uses_the_admin_api() {
        assert!(FLEET_HTML.contains("\"/admin/fleet\""));
        assert!(FLEET_HTML.contains("`/admin/models/${encodeURIComponent(id)}/${action}`"));
        for action in ["load", "unload", "pin", "unpin"] {
            assert!(
                FLEET_HTML.contains(&format!("act(\"{action}\"")),
                "{action}"
            );
        }
        assert!(FLEET_HTML.contains("\"Authorization\"] = \"Bearer \""));
        assert!(FLEET_HTML.contains("sessionStorage"));
        assert!(FLEET_HTML.contains("prefers-color-scheme: dark"));
        // Server data only ever reaches the page as text.
        assert!(!FLEET_HTML.contains("innerHTML"));
    }
}
