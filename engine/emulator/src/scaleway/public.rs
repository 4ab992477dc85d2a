//! Read-only catalogue endpoints: Instance `products/servers`, marketplace v2
//! and the product catalogue (`product-catalog/v2alpha1`), in the shapes of
//! the official Python SDK's `types.py`/`marshalling.py`.

use serde_json::{json, Map, Value};

use super::catalog::{self, CommercialType, ZoneImage};
use super::error::ApiError;
use super::state::{Page, Reply};

const GB: u64 = 1_000_000_000;

fn server_type_json(t: &CommercialType) -> Value {
    let gpu_info = t.gpu.map(
        |g| json!({"gpu_manufacturer": g.manufacturer, "gpu_name": g.name, "gpu_memory": g.memory}),
    );
    let per_volume = if t.takes_local_volumes() {
        json!({"l_ssd": {"min_size": GB, "max_size": t.local_max}})
    } else {
        json!({})
    };
    let bandwidth: u64 = if t.gpu.is_some() {
        2_500_000_000
    } else {
        200_000_000
    };
    json!({
        "monthly_price": (t.hourly_price * 730.0 * 100.0).round() / 100.0,
        "hourly_price": t.hourly_price,
        "alt_names": [],
        "per_volume_constraint": per_volume,
        "volumes_constraint": {"min_size": 0, "max_size": t.local_max},
        "ncpus": t.ncpus,
        "gpu": t.gpus,
        "ram": t.ram,
        "gpu_info": gpu_info,
        "mig_profile": null,
        "arch": "x86_64",
        "network": {
            "interfaces": [{"internal_bandwidth": bandwidth, "internet_bandwidth": bandwidth}],
            "sum_internal_bandwidth": bandwidth,
            "sum_internet_bandwidth": bandwidth,
            "ipv6_support": true,
        },
        "capabilities": {
            "boot_types": ["local", "rescue"],
            "max_file_systems": 0,
            "block_storage": true,
            "hot_snapshots_local_volume": t.takes_local_volumes(),
            "placement_groups": true,
            "private_network": 8,
        },
        "scratch_storage_max_size": null,
        "scratch_storage_max_volumes_count": 0,
        "block_bandwidth": if t.gpu.is_some() { 2_147_483_648_u64 } else { 209_715_200 },
        "end_of_service": false,
        "baremetal": false,
    })
}

/// `GET /instance/v1/zones/{zone}/products/servers`.
#[must_use]
pub fn server_types(zone: &str, page: Page) -> Reply {
    let types: Vec<_> = catalog::COMMERCIAL_TYPES
        .iter()
        .filter(|t| t.in_zone(zone))
        .collect();
    let (items, total) = page.slice(types);
    let servers: Map<String, Value> = items
        .into_iter()
        .map(|t| (t.name.to_owned(), server_type_json(t)))
        .collect();
    Reply {
        status: 200,
        body: Some(json!({"servers": servers})),
        total: Some(total),
    }
}

fn marketplace_image_json(label: &catalog::Label) -> Value {
    json!({
        "id": catalog::stable_uuid(&["marketplace", label.label]),
        "name": label.name,
        "description": format!("{} for Scaleway Instances", label.name),
        "logo": format!("https://scw-marketplace-logos.s3.fr-par.scw.cloud/{}.svg", label.label),
        "categories": [label.category],
        "created_at": "2024-04-25T09:00:00.000000Z",
        "updated_at": "2025-01-15T09:00:00.000000Z",
        "valid_until": null,
        "label": label.label,
    })
}

fn local_image_json(img: &ZoneImage) -> Value {
    json!({
        "id": img.id,
        "compatible_commercial_types": img.compatible_types(),
        "arch": "x86_64",
        "zone": img.zone,
        "label": img.label.label,
        "type": img.kind,
    })
}

/// `GET /marketplace/v2/images` (`arch`, `category` filters).
#[must_use]
pub fn marketplace_images(arch: Option<&str>, category: Option<&str>, page: Page) -> Reply {
    let labels: Vec<_> = catalog::LABELS
        .iter()
        .filter(|_| arch.is_none_or(|a| a == "x86_64"))
        .filter(|l| category.is_none_or(|c| l.category.eq_ignore_ascii_case(c)))
        .collect();
    let (items, total) = page.slice(labels);
    let items: Vec<Value> = items.into_iter().map(marketplace_image_json).collect();
    Reply {
        status: 200,
        body: Some(json!({"images": items, "total_count": total})),
        total: None,
    }
}

/// `GET /marketplace/v2/images/{id}`.
///
/// # Errors
/// `not_found`.
pub fn marketplace_image(id: &str) -> Result<Reply, ApiError> {
    catalog::LABELS
        .iter()
        .map(marketplace_image_json)
        .find(|j| j["id"] == id)
        .map(Reply::ok_json)
        .ok_or_else(|| ApiError::NotFound {
            resource: "image".to_owned(),
            id: id.to_owned(),
        })
}

/// Filters of `GET /marketplace/v2/local-images`.
#[derive(Debug, Default)]
pub struct LocalImageFilters<'a> {
    /// `zone`.
    pub zone: Option<&'a str>,
    /// `arch`.
    pub arch: Option<&'a str>,
    /// `type` (`instance_local`, `instance_sbs`).
    pub kind: Option<&'a str>,
    /// `image_label`.
    pub image_label: Option<&'a str>,
    /// `image_id` (the marketplace image id).
    pub image_id: Option<&'a str>,
}

/// `GET /marketplace/v2/local-images`.
#[must_use]
pub fn local_images(images: &[ZoneImage], f: &LocalImageFilters<'_>, page: Page) -> Reply {
    let imgs: Vec<&ZoneImage> = images
        .iter()
        .filter(|i| f.zone.is_none_or(|z| i.zone == z))
        .filter(|_| f.arch.is_none_or(|a| a == "x86_64"))
        .filter(|i| f.kind.is_none_or(|k| k == "unknown_type" || i.kind == k))
        .filter(|i| f.image_label.is_none_or(|l| i.label.label == l))
        .filter(|i| {
            f.image_id
                .is_none_or(|id| catalog::stable_uuid(&["marketplace", i.label.label]) == id)
        })
        .collect();
    let (items, total) = page.slice(imgs);
    let items: Vec<Value> = items.into_iter().map(local_image_json).collect();
    Reply {
        status: 200,
        body: Some(json!({"local_images": items, "total_count": total})),
        total: None,
    }
}

/// `GET /marketplace/v2/local-images/{id}`.
///
/// # Errors
/// `not_found`.
pub fn local_image(images: &[ZoneImage], id: &str) -> Result<Reply, ApiError> {
    images
        .iter()
        .find(|i| i.id == id)
        .map(|i| Reply::ok_json(local_image_json(i)))
        .ok_or_else(|| ApiError::NotFound {
            resource: "local_image".to_owned(),
            id: id.to_owned(),
        })
}

fn money(eur: f64) -> Value {
    #[allow(clippy::cast_possible_truncation)]
    let nanos_total = (eur * 1e9).round() as i64;
    json!({"currency_code": "EUR", "units": nanos_total / 1_000_000_000, "nanos": nanos_total % 1_000_000_000})
}

fn product_json(t: &CommercialType, zone: &str) -> Value {
    let gpu = t.gpu.map(|g| {
        json!({"description": format!("{} x {} {}", t.gpus, g.manufacturer, g.name), "count": t.gpus, "type": g.name})
    });
    json!({
        "sku": format!("/compute/{}/run_{zone}", t.name.to_lowercase().replace('-', "_")),
        "service_category": "Compute",
        "product_category": "Instance",
        "product": t.name,
        "variant": format!("{} - {zone}", t.name),
        "description": format!("{} Instance, {} vCPU, {} GiB RAM", t.name, t.ncpus, t.ram >> 30),
        "locality": {"zone": zone},
        "price": {"retail_price": money(t.hourly_price)},
        "properties": {
            "hardware": {
                "cpu": {"description": format!("{} x86_64 vCPU", t.ncpus), "arch": "x64", "type": "vCPU", "threads": t.ncpus, "shared": t.name.starts_with("DEV1"), "virtual": {"count": t.ncpus}},
                "ram": {"description": format!("{} GiB", t.ram >> 30), "size": t.ram, "type": "DDR5"},
                "storage": {"description": if t.takes_local_volumes() { format!("{} GB local SSD", t.local_max / GB) } else { "Block Storage only".to_owned() }, "total": t.local_max},
                "network": {"description": "public and private networks", "internal_bandwidth": 1_000_000_000_u64, "public_bandwidth": 1_000_000_000_u64, "max_public_bandwidth": 10_000_000_000_u64},
                "gpu": gpu,
            },
            "instance": {"range": t.range, "offer_id": t.name, "recommended_replacement_offer_ids": []},
        },
        "environmental_impact_estimation": null,
        "unit_of_measure": {"unit": "hour", "size": 1},
        "status": "general_availability",
        "badges": [],
        "end_of_life_at": null,
        "end_of_growth_at": null,
        "end_of_sale_at": null,
    })
}

fn block_product_json(zone: &str, iops: u32, eur_per_gb_hour: f64) -> Value {
    json!({
        "sku": format!("/storage/block/sbs_{iops}k/{zone}"),
        "service_category": "Storage",
        "product_category": "Block Storage",
        "product": format!("sbs_{iops}k"),
        "variant": format!("sbs_{iops}k - {zone}"),
        "description": format!("Block Storage volume, {iops}K IOPS, per GB"),
        "locality": {"zone": zone},
        "price": {"retail_price": money(eur_per_gb_hour)},
        "properties": {"block_storage": {"min_volume_size": GB, "max_volume_size": 10_000 * GB, "volume": {"min_size": GB, "max_size": 10_000 * GB}}},
        "environmental_impact_estimation": null,
        "unit_of_measure": {"unit": "gigabyte", "size": 1},
        "status": "general_availability",
        "badges": [],
        "end_of_life_at": null,
        "end_of_growth_at": null,
        "end_of_sale_at": null,
    })
}

/// `GET /product-catalog/v2alpha1/public-catalog/products`: `instance` and
/// `block_storage` products, optionally for one `zone`.
#[must_use]
pub fn catalog_products(product_types: &[String], zone: Option<&str>, page: Page) -> Reply {
    let wants = |t: &str| product_types.is_empty() || product_types.iter().any(|p| p == t);
    let mut items = Vec::new();
    for z in catalog::ZONES
        .iter()
        .filter(|z| zone.is_none_or(|q| q == **z))
    {
        if wants("instance") {
            items.extend(
                catalog::COMMERCIAL_TYPES
                    .iter()
                    .filter(|t| t.in_zone(z))
                    .map(|t| product_json(t, z)),
            );
        }
        if wants("block_storage") {
            items.push(block_product_json(z, 5, 0.000_11));
            items.push(block_product_json(z, 15, 0.000_15));
        }
    }
    let (items, total) = page.slice(items);
    Reply {
        status: 200,
        body: Some(json!({"products": items, "total_count": total})),
        total: None,
    }
}

impl Reply {
    /// 200 with `body`.
    #[must_use]
    pub fn ok_json(body: Value) -> Self {
        Self {
            status: 200,
            body: Some(body),
            total: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_are_money() {
        assert_eq!(
            money(0.75),
            json!({"currency_code": "EUR", "units": 0, "nanos": 750_000_000})
        );
        assert_eq!(money(6.018)["units"], 6);
    }

    #[test]
    fn gpu_types_have_gpu_info_and_no_local_storage() {
        let r = server_types(
            "fr-par-2",
            Page {
                page: 1,
                per_page: 100,
            },
        );
        let l4 = &r.body.unwrap()["servers"]["L4-1-24G"];
        assert_eq!(l4["gpu"], 1);
        assert_eq!(l4["gpu_info"]["gpu_name"], "L4");
        assert_eq!(l4["volumes_constraint"]["max_size"], 0);
    }
}
