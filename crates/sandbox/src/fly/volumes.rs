//! Fly Volumes: one volume's record and its Volume JSON, and the rules for machine
//! configs that mount one. A volume is attached to the live machine whose config
//! mounts it; that is read off the machines each time, never kept twice, so a
//! destroyed machine has let go of its volume without anyone saying so.
//!
//! The rules are Fly's documented ones (Machines API docs, `mounts` and the volumes
//! overview): a machine mounts at most one volume, in its own region; a volume is
//! attached to one machine at a time; and an update cannot change which volume a
//! machine has: "To release a volume that is attached to a Machine, destroy the Machine."

use std::time::SystemTime;

use serde_json::{json, Value};

use super::ids;
use super::machine::Machine;
use super::platform::Failure;

/// Fly's default for `size_gb` when a create request leaves it out.
pub const DEFAULT_SIZE_GB: u64 = 3;
/// ext4's block size on Fly volumes.
const BLOCK_SIZE: u64 = 4096;

pub struct Volume {
    pub id: String,
    pub name: String,
    pub region: String,
    pub zone: String,
    pub size_gb: u64,
    /// `created`, or `destroyed` once deleted.
    pub state: String,
    pub created_at: SystemTime,
}

impl Volume {
    pub fn new(name: String, region: String, size_gb: u64) -> Volume {
        Volume {
            id: ids::volume_id(),
            name,
            region,
            zone: ids::zone(),
            size_gb,
            state: "created".into(),
            created_at: SystemTime::now(),
        }
    }

    pub fn destroyed(&self) -> bool {
        self.state == "destroyed"
    }

    /// The Volume JSON of the Machines API; `attached` is the machine that mounts it.
    pub fn to_json(&self, attached: Option<&str>) -> Value {
        let blocks = self.size_gb * (1 << 30) / BLOCK_SIZE;
        json!({
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "size_gb": self.size_gb,
            "region": self.region,
            "zone": self.zone,
            "encrypted": true,
            "attached_machine_id": attached,
            // Only ever set for Nomad allocations, never for machines.
            "attached_alloc_id": null,
            "created_at": ids::rfc3339(self.created_at),
            "blocks": blocks,
            "block_size": BLOCK_SIZE,
            // A fresh ext4 file system: a few blocks used, 5% reserved for root.
            "blocks_free": blocks.saturating_sub(6),
            "blocks_avail": (blocks * 95 / 100).saturating_sub(6),
            "fstype": "ext4",
            "snapshot_retention": 5,
            "auto_backup_enabled": true,
            "host_dedication_key": "",
        })
    }
}

/// The live machine that mounts volume `id`, if any.
pub fn attached_to<'a>(machines: &'a [Machine], id: &str) -> Option<&'a Machine> {
    machines.iter().find(|m| m.state != "destroyed" && m.mounted_volume().as_deref() == Some(id))
}

/// The volume `config` mounts, checked for shape: `mounts` is absent or an array of
/// `{volume, path}` objects, at most one of them.
pub fn mount_of(config: &Value) -> Result<Option<String>, Failure> {
    let mounts = match config.get("mounts") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(mounts)) => mounts,
        Some(_) => {
            return Err(fail(400, "config.mounts must be an array of {\"volume\": \"vol_...\", \"path\": \"/data\"}"))
        }
    };
    for (i, mount) in mounts.iter().enumerate() {
        let field = |key: &str| mount.get(key).and_then(Value::as_str).filter(|s| !s.is_empty());
        if field("volume").is_none() {
            return Err(fail(
                400,
                format!("config.mounts[{i}].volume is required: the id of one of the app's volumes"),
            ));
        }
        if field("path").is_none() {
            return Err(fail(400, format!("config.mounts[{i}].path is required: where to mount it, e.g. /data")));
        }
    }
    if mounts.len() > 1 {
        return Err(fail(422, format!("a machine can mount only one volume; config.mounts names {}", mounts.len())));
    }
    Ok(mounts.first().and_then(|m| m.get("volume")?.as_str()).map(str::to_string))
}

/// Whether machine `machine_id` (in `region`, with volume `current` mounted now) may
/// have a config that mounts `wanted`. A new machine has no id and no volume yet.
pub fn check_mount(
    volumes: &[Volume],
    machines: &[Machine],
    machine_id: Option<&str>,
    region: &str,
    current: Option<&str>,
    wanted: Option<&str>,
) -> Result<(), Failure> {
    if let Some(id) = machine_id.filter(|_| current != wanted) {
        let message = match (current, wanted) {
            (Some(had), None) => format!(
                "machine {id} has volume {had} mounted and an update cannot detach it; destroy the machine to release the volume"
            ),
            (Some(had), Some(new)) => format!(
                "machine {id} has volume {had} mounted and an update cannot swap it for {new}; create a new machine that mounts {new}"
            ),
            (None, new) => format!(
                "machine {id} has no volume and an update cannot attach {}; create a new machine that mounts it",
                new.unwrap_or_default()
            ),
        };
        return Err(fail(422, message));
    }
    let Some(wanted) = wanted else { return Ok(()) };
    let Some(volume) = volumes.iter().find(|v| v.id == wanted && !v.destroyed()) else {
        return Err(fail(422, format!("volume {wanted} not found; mount one listed by GET /v1/apps/APP/volumes")));
    };
    if volume.region != region {
        return Err(fail(
            422,
            format!(
                "volume {wanted} is in region {}, the machine in {region}; a machine mounts a volume in its own region",
                volume.region
            ),
        ));
    }
    match attached_to(machines, wanted) {
        // Fly answers 412 when a machine would use a volume another machine has.
        Some(other) if Some(other.id.as_str()) != machine_id => Err(fail(
            412,
            format!(
                "volume {wanted} is already attached to machine {}; a volume is attached to one machine at a time",
                other.id
            ),
        )),
        _ => Ok(()),
    }
}

/// A volume name as Fly takes it: lowercase letters, digits and underscores, at most 30.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 30
        && name.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
}

fn fail(status: u16, message: impl Into<String>) -> Failure {
    Failure { status, message: message.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(id: &str, volume: &str, state: &str) -> Machine {
        let mut m = Machine::new(
            id.into(),
            id.into(),
            "ams".into(),
            json!({"mounts": [{"volume": volume, "path": "/data", "name": "data"}]}),
        );
        m.state = state.into();
        m
    }

    #[test]
    fn mounts_must_name_a_volume_and_a_path_and_be_one_at_most() {
        assert_eq!(mount_of(&json!({})), Ok(None));
        assert_eq!(mount_of(&json!({"mounts": []})), Ok(None));
        let one = json!({"mounts": [{"volume": "vol_a", "path": "/data"}]});
        assert_eq!(mount_of(&one), Ok(Some("vol_a".into())));
        assert_eq!(mount_of(&json!({"mounts": [{"path": "/data"}]})).map_err(|f| f.status), Err(400));
        assert_eq!(mount_of(&json!({"mounts": [{"volume": "vol_a"}]})).map_err(|f| f.status), Err(400));
        assert_eq!(mount_of(&json!({"mounts": {"volume": "vol_a"}})).map_err(|f| f.status), Err(400));
        let two = json!({"mounts": [{"volume": "vol_a", "path": "/a"}, {"volume": "vol_b", "path": "/b"}]});
        assert_eq!(mount_of(&two).map_err(|f| f.status), Err(422));
    }

    #[test]
    fn a_volume_goes_to_one_live_machine_in_its_region() {
        let volume = Volume::new("data".into(), "ams".into(), 1);
        let id = volume.id.clone();
        let volumes = [volume];
        let holder = machine("m1", &id, "started");
        let machines = [holder];
        let new_machine = |region: &str| check_mount(&volumes, &machines, None, region, None, Some(&id));

        let taken = new_machine("ams").unwrap_err();
        assert_eq!(taken.status, 412);
        assert!(taken.message.contains(&id) && taken.message.contains("m1"), "{}", taken.message);
        assert_eq!(new_machine("lhr").unwrap_err().status, 422, "another region");
        assert_eq!(check_mount(&volumes, &machines, None, "ams", None, Some("vol_gone")).unwrap_err().status, 422);
        assert!(check_mount(&volumes, &machines, Some("m1"), "ams", Some(&id), Some(&id)).is_ok(), "its own");

        let machines = [machine("m1", &id, "destroyed")];
        assert!(check_mount(&volumes, &machines, None, "ams", None, Some(&id)).is_ok(), "released by the destroy");
        assert!(attached_to(&machines, &id).is_none());
    }

    #[test]
    fn an_update_keeps_the_volume_a_machine_has() {
        let machines: [Machine; 0] = [];
        let volumes = [Volume::new("data".into(), "ams".into(), 1), Volume::new("data".into(), "ams".into(), 1)];
        let (a, b) = (volumes[0].id.as_str(), volumes[1].id.as_str());
        let update = |current, wanted| check_mount(&volumes, &machines, Some("m1"), "ams", current, wanted);
        assert!(update(Some(a), Some(a)).is_ok());
        assert!(update(None, None).is_ok());
        for (current, wanted) in [(Some(a), Some(b)), (Some(a), None), (None, Some(b))] {
            let refused = update(current, wanted).unwrap_err();
            assert_eq!(refused.status, 422);
            assert!(refused.message.contains(current.or(wanted).unwrap_or_default()), "{}", refused.message);
        }
    }

    #[test]
    fn volume_json_has_the_spec_shape() {
        let v = Volume::new("data".into(), "ams".into(), 1);
        let free = v.to_json(None);
        assert!(free["attached_machine_id"].is_null() && free["attached_alloc_id"].is_null());
        assert_eq!((free["state"].as_str(), free["fstype"].as_str()), (Some("created"), Some("ext4")));
        assert_eq!(free["blocks"], 262_144);
        assert_eq!(free["encrypted"], true);
        assert_eq!(v.to_json(Some("m1"))["attached_machine_id"], "m1");
        assert!(valid_name("pg_data") && !valid_name("Data") && !valid_name("") && !valid_name(&"a".repeat(31)));
    }
}
