//! The feature checkboxes of the license and user pages (white paper §3.7.2: a CSR grants
//! or blocks each way of reaching a user's data), and the form that posts them.

use noc_storage::{Feature, Features};
use serde::Deserialize;

use crate::views::session::CsrfForm;

/// One checkbox.
pub struct FeatureBox {
    pub name: &'static str,
    pub label: &'static str,
    pub checked: bool,
}

/// What the console calls a feature.
pub fn label(f: Feature) -> &'static str {
    match f {
        Feature::BrowsePc => "Browse from a PC",
        Feature::BrowsePda => "Browse from a PDA",
        Feature::BrowseWap => "Browse from a WAP phone",
        Feature::ConstantSync => "ConstantSync devices",
        Feature::Alerts => "New-mail alerts",
    }
}

/// The checkboxes for `current`, in a fixed order.
pub fn boxes(current: Features) -> Vec<FeatureBox> {
    Feature::ALL
        .into_iter()
        .map(|f| FeatureBox { name: f.as_str(), label: label(f), checked: current.contains(f) })
        .collect()
}

/// The posted checkboxes (a box left unticked is not sent at all) and, on a license's
/// page, its administrator's address.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeaturesForm {
    csrf: String,
    #[serde(default)]
    browse_pc: Option<String>,
    #[serde(default)]
    browse_pda: Option<String>,
    #[serde(default)]
    browse_wap: Option<String>,
    #[serde(default)]
    constant_sync: Option<String>,
    #[serde(default)]
    alerts: Option<String>,
    #[serde(default)]
    pub admin_email: Option<String>,
}

impl FeaturesForm {
    /// The ticked features.
    pub fn features(&self) -> Features {
        [
            (Feature::BrowsePc, &self.browse_pc),
            (Feature::BrowsePda, &self.browse_pda),
            (Feature::BrowseWap, &self.browse_wap),
            (Feature::ConstantSync, &self.constant_sync),
            (Feature::Alerts, &self.alerts),
        ]
        .into_iter()
        .fold(Features::NONE, |set, (f, ticked)| set.with(f, ticked.is_some()))
    }
}

impl CsrfForm for FeaturesForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn posted(body: &str) -> FeaturesForm {
        serde_urlencoded::from_str(body).expect("form")
    }

    #[test]
    fn unticked_boxes_are_taken_away_and_ticked_ones_given() {
        let f = posted("csrf=x&browse_pc=on&alerts=on");
        assert_eq!(f.features(), Features::NONE.with(Feature::BrowsePc, true).with(Feature::Alerts, true));
        assert_eq!(posted("csrf=x").features(), Features::NONE);
        let all = "csrf=x&browse_pc=on&browse_pda=on&browse_wap=on&constant_sync=on&alerts=on";
        assert_eq!(posted(all).features(), Features::ALL);
    }

    #[test]
    fn the_boxes_show_the_set_and_name_the_form_fields() {
        let shown = boxes(Features::ALL.with(Feature::BrowseWap, false));
        let names: Vec<_> = shown.iter().map(|b| b.name).collect();
        assert_eq!(names, ["browse_pc", "browse_pda", "browse_wap", "constant_sync", "alerts"]);
        assert!(!shown[2].checked && shown[0].checked && shown[4].checked);
        let body: String = names.iter().map(|n| format!("&{n}=on")).collect();
        assert_eq!(posted(&format!("csrf=x{body}")).features(), Features::ALL, "every box is a field of the form");
    }

    #[test]
    fn an_unknown_field_is_refused() {
        assert!(serde_urlencoded::from_str::<FeaturesForm>("csrf=x&browse_tv=on").is_err());
    }
}
