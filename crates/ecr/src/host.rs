//! ECR registry hosts: `<account>.dkr.ecr[-fips].<region>.<partition suffix>`, and the dual-stack
//! `<account>.dkr-ecr[-fips].<region>.on.aws` form. The account is the registry id every ECR
//! call names, so a cluster can mirror into another account's registry.

use std::fmt;

/// An AWS partition, told apart by the host's DNS suffix (and region for GovCloud).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Partition {
    Aws,
    AwsCn,
    AwsUsGov,
    AwsIso,
    AwsIsoB,
    AwsIsoE,
    AwsIsoF,
    AwsEusc,
}

impl Partition {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aws => "aws",
            Self::AwsCn => "aws-cn",
            Self::AwsUsGov => "aws-us-gov",
            Self::AwsIso => "aws-iso",
            Self::AwsIsoB => "aws-iso-b",
            Self::AwsIsoE => "aws-iso-e",
            Self::AwsIsoF => "aws-iso-f",
            Self::AwsEusc => "aws-eusc",
        }
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed ECR registry host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EcrHost {
    /// The 12-digit account id: ECR's registry id.
    pub account: String,
    pub region: String,
    pub fips: bool,
    /// The `on.aws` dual-stack endpoint.
    pub dual_stack: bool,
    pub partition: Partition,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{host:?} is not an ECR registry host ({reason}); expected <account>.dkr.ecr.<region>.amazonaws.com"
)]
pub struct HostError {
    pub host: String,
    pub reason: &'static str,
}

/// DNS suffixes of ECR private registries, and the partition each means.
const SUFFIXES: &[(&str, Partition)] = &[
    ("amazonaws.com.cn", Partition::AwsCn),
    ("amazonaws.com", Partition::Aws),
    ("amazonaws.eu", Partition::AwsEusc),
    ("on.amazonwebservices.com.cn", Partition::AwsCn),
    ("on.aws", Partition::Aws),
    ("sc2s.sgov.gov", Partition::AwsIsoB),
    ("c2s.ic.gov", Partition::AwsIso),
    ("cloud.adc-e.uk", Partition::AwsIsoE),
    ("csp.hci.ic.gov", Partition::AwsIsoF),
];

impl EcrHost {
    /// Parse a registry host. A port or a path is refused: ECR serves neither.
    pub fn parse(host: &str) -> Result<Self, HostError> {
        let fail = |reason| HostError {
            host: host.to_owned(),
            reason,
        };
        let lower = host.to_ascii_lowercase();
        let (rest, suffix, partition) = SUFFIXES
            .iter()
            .find_map(|(suffix, partition)| {
                lower
                    .strip_suffix(suffix)
                    .and_then(|rest| rest.strip_suffix('.'))
                    .map(|rest| (rest, *suffix, *partition))
            })
            .ok_or_else(|| fail("unknown DNS suffix"))?;
        let labels: Vec<&str> = rest.split('.').collect();
        // Classic: `<account>.dkr.ecr[-fips].<region>`; dual-stack: `<account>.dkr-ecr[-fips].<region>`.
        let (account, service, region) = match labels.as_slice() {
            [account, "dkr", service, region] => (*account, *service, *region),
            [account, service, region] => (*account, *service, *region),
            _ => {
                return Err(fail(
                    "expected <account>.dkr.ecr.<region> before the suffix",
                ));
            }
        };
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(fail("the account must be 12 digits"));
        }
        let dual_stack = suffix.starts_with("on.");
        let classic = labels.len() == 4;
        let fips = match (service, classic) {
            ("ecr", true) | ("dkr-ecr", false) => false,
            ("ecr-fips", true) | ("dkr-ecr-fips", false) => true,
            _ => {
                return Err(fail(
                    "expected dkr.ecr, dkr.ecr-fips, dkr-ecr or dkr-ecr-fips",
                ));
            }
        };
        Self::finish(account, region, fips, dual_stack, partition, host)
    }

    fn finish(
        account: &str,
        region: &str,
        fips: bool,
        dual_stack: bool,
        partition: Partition,
        host: &str,
    ) -> Result<Self, HostError> {
        let valid_region = !region.is_empty()
            && region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !region.starts_with('-')
            && !region.ends_with('-');
        if !valid_region {
            return Err(HostError {
                host: host.to_owned(),
                reason: "the region is not a region name",
            });
        }
        let partition = match partition {
            Partition::Aws if region.starts_with("us-gov-") => Partition::AwsUsGov,
            other => other,
        };
        Ok(Self {
            account: account.to_owned(),
            region: region.to_owned(),
            fips,
            dual_stack,
            partition,
        })
    }
}
