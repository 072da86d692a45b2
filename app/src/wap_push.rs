//! WAP Push Service Indication (WAP-167 SI, WAP-230 WSP, WAP-259 WDP) for alerts: a
//! binary SMS that makes a WAP phone show the alert's text with a link to the WAP inbox.
//!
//! The SMS is a user data header with 16-bit port addressing (destination 2948, the WAP
//! Push connectionless port; source 9200), then a WSP Push PDU (transaction id, type 0x06,
//! the content type `application/vnd.wap.sic`), then the SI document in WBXML 1.2
//! (public id 0x05, "SI 1.0"; UTF-8). Everything must fit one SMS (140 octets): the text is
//! shortened until it does.

/// UDH: length 6; port addressing, 16-bit (IEI 0x05, length 4): to 2948, from 9200.
const UDH: [u8; 7] = [0x06, 0x05, 0x04, 0x0B, 0x84, 0x23, 0xF0];
/// One SMS.
const MAX_OCTETS: usize = 140;

/// WBXML tokens of SI 1.0 (WAP-167 §8.3): `<si>` with content, `<indication>` with
/// attributes and content, attribute starts and END/STR_I.
mod token {
    pub const END: u8 = 0x01;
    pub const STR_I: u8 = 0x03;
    pub const SI: u8 = 0x45;
    pub const INDICATION: u8 = 0xC6;
    pub const ACTION_SIGNAL_MEDIUM: u8 = 0x07;
    pub const HREF: u8 = 0x0B;
    pub const HREF_HTTP: u8 = 0x0C;
    pub const HREF_HTTPS: u8 = 0x0E;
    pub const SI_ID: u8 = 0x11;
}

fn inline(out: &mut Vec<u8>, s: &str) {
    out.push(token::STR_I);
    out.extend(s.bytes().filter(|b| *b != 0));
    out.push(0);
}

/// The SI document in WBXML: `<si><indication href=… si-id=… action="signal-medium">text</indication></si>`.
pub fn si_wbxml(href: &str, si_id: &str, text: &str) -> Vec<u8> {
    let mut out = vec![0x02, 0x05, 0x6A, 0x00]; // WBXML 1.2, SI 1.0, UTF-8, no string table
    out.push(token::SI);
    out.push(token::INDICATION);
    if let Some(rest) = href.strip_prefix("https://") {
        out.push(token::HREF_HTTPS);
        inline(&mut out, rest);
    } else if let Some(rest) = href.strip_prefix("http://") {
        out.push(token::HREF_HTTP);
        inline(&mut out, rest);
    } else {
        out.push(token::HREF);
        inline(&mut out, href);
    }
    out.push(token::SI_ID);
    inline(&mut out, si_id);
    out.push(token::ACTION_SIGNAL_MEDIUM);
    out.push(token::END); // end of attributes
    inline(&mut out, text);
    out.push(token::END); // </indication>
    out.push(token::END); // </si>
    out
}

/// The WSP Push PDU carrying `body` as `application/vnd.wap.sic`.
pub fn wsp_push(transaction: u8, body: &[u8]) -> Vec<u8> {
    // Headers: the content type alone, as a well-known short integer (0x2E | 0x80).
    let headers = [0xAE];
    let mut out = vec![transaction, 0x06, headers.len() as u8];
    out.extend_from_slice(&headers);
    out.extend_from_slice(body);
    out
}

/// The whole binary SMS payload (UDH included; send with `esm_class` 0x40 and
/// `data_coding` 0x04), its text shortened to fit 140 octets; `None` when even without
/// text the link does not fit.
pub fn sms_payload(href: &str, si_id: &str, text: &str) -> Option<Vec<u8>> {
    let mut chars: Vec<char> = text.chars().collect();
    loop {
        let shown: String = chars.iter().collect();
        let mut sms = UDH.to_vec();
        sms.extend(wsp_push(0x01, &si_wbxml(href, si_id, &shown)));
        if sms.len() <= MAX_OCTETS {
            return Some(sms);
        }
        chars.pop()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_indication_in_wbxml_behind_a_wsp_push_and_a_port_header() {
        let si = si_wbxml("https://noc.example/wap/mail", "a1", "Hi");
        let mut expected = vec![0x02, 0x05, 0x6A, 0x00, 0x45, 0xC6, 0x0E, 0x03];
        expected.extend_from_slice(b"noc.example/wap/mail\0");
        expected.extend_from_slice(&[0x11, 0x03]);
        expected.extend_from_slice(b"a1\0");
        expected.extend_from_slice(&[0x07, 0x01, 0x03]);
        expected.extend_from_slice(b"Hi\0");
        expected.extend_from_slice(&[0x01, 0x01]);
        assert_eq!(si, expected);
        let sms = sms_payload("https://noc.example/wap/mail", "a1", "Hi").expect("fits");
        assert_eq!(&sms[..7], &UDH);
        assert_eq!(&sms[7..11], &[0x01, 0x06, 0x01, 0xAE]);
        assert_eq!(&sms[11..], &si[..]);
        let long = sms_payload("https://noc.example/wap/mail", "a1", &"x".repeat(500)).expect("shortened");
        assert!(long.len() <= MAX_OCTETS && long.len() > 120, "{}", long.len());
        assert_eq!(sms_payload(&format!("https://{}", "h".repeat(200)), "a1", "Hi"), None);
    }
}
