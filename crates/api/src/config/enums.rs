//! Closed sets of configuration values. Each deserializes from its exact spelling and
//! otherwise says `unknown value "X", expected one of A, B`.

macro_rules! config_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every accepted spelling, in order.
            pub const VALUES: &'static [&'static str] = &[$($text),+];

            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    other => Err(format!(
                        "unknown value {other:?}, expected one of {}",
                        Self::VALUES.join(", ")
                    )),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({"type": "string", "enum": Self::VALUES})
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

config_enum! {
    /// What kind of registry images are mirrored into.
    TargetKind { Ecr = "ecr", Generic = "generic" }
}

config_enum! {
    /// ECR tag mutability, spelled as ECR spells it.
    TagMutability { Mutable = "MUTABLE", Immutable = "IMMUTABLE" }
}

config_enum! {
    /// ECR encryption at rest.
    EncryptionType { Aes256 = "AES256", Kms = "KMS" }
}

config_enum! {
    /// How the webhook handles the race between "pod points at the mirror" and
    /// "the mirror has the image" (DESIGN.md, rewritePolicy).
    RewritePolicy {
        Gate = "Gate",
        WhenReady = "WhenReady",
        Always = "Always",
        Wait = "Wait",
        /// Audit: mirrors are recorded and copied, Pods are never changed.
        Record = "Record",
    }
}

config_enum! {
    /// Whether injected pull secrets replace the pod's or are added to them.
    PullSecretMode { Append = "Append", Replace = "Replace" }
}

config_enum! {
    /// A container's imagePullPolicy.
    PullPolicy { Always = "Always", IfNotPresent = "IfNotPresent", Never = "Never" }
}

config_enum! {
    /// What a policy does when ECR could not be asked.
    OnUnknown { Allow = "Allow", Deny = "Deny" }
}

config_enum! {
    /// Where copies run: in a Job per copy, or inside the controller.
    CopyExecutor { Job = "job", Inline = "inline" }
}
