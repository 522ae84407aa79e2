//! QR codes as inline SVG, for the 2FA enrollment page: the authenticator
//! app scans the `otpauth://` URI from the screen.
//!
//! The `qrcode` crate does the encoding; the SVG is written here so that it
//! is exactly what an inline element in our pages needs: no XML prolog, no
//! external references, no script, no `style` attribute (the page's CSP
//! allows only the hashed stylesheet), accessible name and role, and a
//! `viewBox` in module units so the stylesheet can size it.

use qrcode::{Color, EcLevel, QrCode};
use std::fmt::Write;

/// `id` of the root `<svg>` element, for the stylesheet and browser tests.
pub const ELEMENT_ID: &str = "totp-qr";
/// Accessible name of the image. The page shows the key as text next to it
/// for people who cannot scan.
pub const ARIA_LABEL: &str = "QR code to add this account to an authenticator app";
/// Light modules around the symbol: ISO/IEC 18004 asks for 4, and scanners
/// find the finder patterns far less reliably without them.
pub const QUIET_ZONE: usize = 4;
/// Default rendered size of one module in CSS pixels (the stylesheet may
/// override width and height; the viewBox keeps it sharp at any size).
const MODULE_PX: usize = 5;

/// Why no QR code could be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QrError {
    /// More data than the largest QR symbol holds at level M (~2.3 kB);
    /// an otpauth URI only gets there with an absurd issuer or account name.
    #[error("too much data for a QR code")]
    TooLong,
}

/// An inline `<svg id="totp-qr" role="img" aria-label="…">` QR code of
/// `data`, error correction level M (15 % of the symbol may be damaged
/// or glare-covered and it still scans), with a 4-module quiet zone.
pub fn svg(data: &str) -> Result<String, QrError> {
    let code = QrCode::with_error_correction_level(data.as_bytes(), EcLevel::M)
        .map_err(|_| QrError::TooLong)?;
    let width = code.width();
    let colors = code.to_colors();
    let size = width + 2 * QUIET_ZONE;
    let px = size * MODULE_PX;

    let mut out = String::with_capacity(64 * width + 512);
    // Writing to a String cannot fail, so the fmt::Results are ignored.
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" id="{ELEMENT_ID}" role="img" aria-label="{ARIA_LABEL}" viewBox="0 0 {size} {size}" width="{px}" height="{px}" shape-rendering="crispEdges"><rect width="{size}" height="{size}" fill="#fff"/><path fill="#000" d=""##
    );
    // One rectangle per horizontal run of dark modules keeps the path short
    // (a version 6 symbol is ~2 kB instead of ~10 kB for one per module).
    for (y, row) in colors.chunks(width).enumerate() {
        let mut x = 0;
        while x < width {
            if row[x] == Color::Dark {
                let start = x;
                while x < width && row[x] == Color::Dark {
                    x += 1;
                }
                let run = x - start;
                let _ = write!(
                    out,
                    "M{} {}h{run}v1h-{run}z",
                    start + QUIET_ZONE,
                    y + QUIET_ZONE
                );
            } else {
                x += 1;
            }
        }
    }
    out.push_str(r#""/></svg>"#);
    Ok(out)
}
