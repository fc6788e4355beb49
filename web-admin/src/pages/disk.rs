/*!
The Disk page: the data folder, which disk it is on, every disk with its SMART health, and
preparing an empty disk as the data disk (after typing its serial to confirm).

Not for: partitioning itself (the backend's, which needs root).
*/

use axum::extract::State;
use axum::Form;

use super::*;

pub(super) async fn page(State(app): State<Shared>, signed: SignedIn) -> PageResult {
    let (ctx, session) = (&signed.0, signed.session());
    let r = app.backend.disks()?;
    let body = html! {
        h1 { "Disk" }
        p { "Data folder " code { (r.data_dir) } ": " (r.data_disk) }
        table {
            thead { tr { th { "Device" } th { "Model" } th { "Serial" } th { "Size" } th { "File system" } th { "Mounted at" } th { "SMART" } } }
            tbody {
                @for d in &r.disks {
                    tr {
                        td { code { (d.device) } }
                        td { (d.model) }
                        td { (d.serial) }
                        td { (format::bytes(d.size_bytes)) }
                        td { (d.filesystem.clone().unwrap_or_default()) @if let Some(l) = &d.label { " (" (l) ")" } }
                        td { (d.mountpoint.clone().unwrap_or_default()) }
                        td { (d.smart.clone().unwrap_or_else(|| "–".into())) }
                    }
                }
            }
        }
        @for d in r.disks.iter().filter(|d| d.mountpoint.is_none() && !d.removable) {
            details {
                summary { "Prepare " (d.device) " as the data disk" }
                p.warning.error { "Everything on " (d.device) " (" (d.model) ", " (format::bytes(d.size_bytes)) ") will be erased." }
                form method="post" action="/disk/prepare" {
                    (csrf_field(session))
                    input type="hidden" name="device" value=(d.device);
                    label { "Type the disk's serial number, " strong { (if d.serial.is_empty() { &d.model } else { &d.serial }) } ", to confirm"
                        input name="confirm" required autocomplete="off";
                    }
                    button.danger type="submit" { "Erase and prepare " (d.device) }
                }
            }
        }
    };
    Ok(layout(&app, ctx, session, "/disk", false, body))
}

#[derive(Deserialize)]
pub struct PrepareForm {
    #[serde(default)]
    csrf: String,
    device: String,
    #[serde(default)]
    confirm: String,
}

pub(super) async fn prepare(
    State(app): State<Shared>,
    SignedIn(ctx): SignedIn,
    Form(f): Form<PrepareForm>,
) -> Response {
    let result = need_csrf(&ctx, &f.csrf)
        .map_err(PageError::from)
        .and_then(|_| Ok(app.backend.prepare_disk(&f.device, f.confirm.trim())?))
        .map(|()| format!("{} is now the data disk.", f.device));
    done(&app, &ctx, "/disk", result)
}
