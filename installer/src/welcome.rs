//! The welcome mail after an install: the client's address gets the site's address and its
//! one-time login link.

use crate::Installer;
use site::SiteTask;
use worker::TaskLog;

/// Sends the mail if a relay is configured. `Err` carries what the task log and the task's
/// warning say; the site is installed either way.
pub async fn send(
    inst: &Installer,
    st: &SiteTask,
    login_link: Option<&str>,
    log: &TaskLog,
) -> Result<(), String> {
    let Some(smtp) = &inst.settings.smtp else {
        log.info(
            "no mail relay is configured (HOSTING_SMTP_HOST), so the welcome mail was skipped",
        )
        .await;
        return Ok(());
    };
    let domain = &st.site.domain;
    let mut body = format!(
        "Hello,\n\nyour site {domain} is installed and online at {}/\n",
        st.url
    );
    match login_link {
        Some(link) => body.push_str(&format!(
            "\nLog in as its administrator with this one-time link (it works once and \
             expires in {} hours):\n\n  {link}\n\nAfterwards, set a password for your account.\n",
            inst.login_link_ttl().await.as_secs() / 3600
        )),
        None => body.push_str("\nAsk your hosting provider for a login link.\n"),
    }
    let message = mail::Message {
        to: st.admin_email.clone(),
        subject: format!("Your new site {domain} is ready"),
        body,
    };
    match mail::send(smtp, &message).await {
        Ok(reply) => {
            log.info(format!(
                "welcome mail sent to {} through {}:{} ({reply})",
                st.admin_email, smtp.host, smtp.port
            ))
            .await;
            Ok(())
        }
        Err(e) => {
            let why = format!(
                "the site is installed, but the welcome mail to {} could not be sent: {e:#}",
                st.admin_email
            );
            log.warn(why.clone()).await;
            Err(why)
        }
    }
}
