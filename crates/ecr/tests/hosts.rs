//! ECR registry hosts in every partition and endpoint flavour, and what is refused.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use privateer_ecr::{EcrHost, Partition};

#[test]
fn hosts_parse_into_account_region_partition_and_flavour() {
    let cases = [
        (
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
            "eu-west-1",
            Partition::Aws,
            false,
            false,
        ),
        (
            "123456789012.dkr.ecr.us-east-1.amazonaws.com",
            "us-east-1",
            Partition::Aws,
            false,
            false,
        ),
        (
            "123456789012.dkr.ecr-fips.us-east-1.amazonaws.com",
            "us-east-1",
            Partition::Aws,
            true,
            false,
        ),
        (
            "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn",
            "cn-north-1",
            Partition::AwsCn,
            false,
            false,
        ),
        (
            "123456789012.dkr.ecr.cn-northwest-1.amazonaws.com.cn",
            "cn-northwest-1",
            Partition::AwsCn,
            false,
            false,
        ),
        (
            "123456789012.dkr.ecr.us-gov-west-1.amazonaws.com",
            "us-gov-west-1",
            Partition::AwsUsGov,
            false,
            false,
        ),
        (
            "123456789012.dkr.ecr-fips.us-gov-east-1.amazonaws.com",
            "us-gov-east-1",
            Partition::AwsUsGov,
            true,
            false,
        ),
        (
            "123456789012.dkr-ecr.eu-central-1.on.aws",
            "eu-central-1",
            Partition::Aws,
            false,
            true,
        ),
        (
            "123456789012.dkr-ecr-fips.us-west-2.on.aws",
            "us-west-2",
            Partition::Aws,
            true,
            true,
        ),
        (
            "123456789012.dkr-ecr.cn-north-1.on.amazonwebservices.com.cn",
            "cn-north-1",
            Partition::AwsCn,
            false,
            true,
        ),
        (
            "123456789012.dkr.ecr.us-iso-east-1.c2s.ic.gov",
            "us-iso-east-1",
            Partition::AwsIso,
            false,
            false,
        ),
        (
            "123456789012.dkr.ecr.us-isob-east-1.sc2s.sgov.gov",
            "us-isob-east-1",
            Partition::AwsIsoB,
            false,
            false,
        ),
        (
            "123456789012.dkr.ecr.eu-isoe-west-1.cloud.adc-e.uk",
            "eu-isoe-west-1",
            Partition::AwsIsoE,
            false,
            false,
        ),
        (
            "123456789012.dkr.ecr.us-isof-south-1.csp.hci.ic.gov",
            "us-isof-south-1",
            Partition::AwsIsoF,
            false,
            false,
        ),
        (
            "123456789012.dkr.ecr.eusc-de-east-1.amazonaws.eu",
            "eusc-de-east-1",
            Partition::AwsEusc,
            false,
            false,
        ),
        (
            "123456789012.DKR.ECR.EU-WEST-1.AMAZONAWS.COM",
            "eu-west-1",
            Partition::Aws,
            false,
            false,
        ),
    ];
    for (host, region, partition, fips, dual_stack) in cases {
        let parsed = EcrHost::parse(host).unwrap_or_else(|e| panic!("{host}: {e}"));
        assert_eq!(
            parsed,
            EcrHost {
                account: "123456789012".into(),
                region: region.into(),
                fips,
                dual_stack,
                partition,
            },
            "{host}"
        );
    }
}

#[test]
fn other_hosts_are_refused_with_the_reason() {
    let cases = [
        ("public.ecr.aws", "unknown DNS suffix"),
        ("ghcr.io", "unknown DNS suffix"),
        (
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com:443",
            "unknown DNS suffix",
        ),
        (
            "12345678901.dkr.ecr.eu-west-1.amazonaws.com",
            "the account must be 12 digits",
        ),
        (
            "12345678901x.dkr.ecr.eu-west-1.amazonaws.com",
            "the account must be 12 digits",
        ),
        (
            "123456789012.dkr.ecs.eu-west-1.amazonaws.com",
            "expected dkr.ecr",
        ),
        (
            "123456789012.ecr.eu-west-1.amazonaws.com",
            "expected dkr.ecr",
        ),
        (
            "123456789012.dkr.ecr.eu_west_1.amazonaws.com",
            "the region is not a region name",
        ),
        (
            "123456789012.dkr.ecr.-eu.amazonaws.com",
            "the region is not a region name",
        ),
        (
            "a.b.123456789012.dkr.ecr.eu-west-1.amazonaws.com",
            "expected <account>.dkr.ecr.<region>",
        ),
        ("amazonaws.com", "unknown DNS suffix"),
        ("", "unknown DNS suffix"),
    ];
    for (host, reason) in cases {
        let error = EcrHost::parse(host).expect_err(host).to_string();
        assert!(error.contains(reason), "{host}: {error}");
        assert!(error.contains(&format!("{host:?}")), "{error}");
    }
}
