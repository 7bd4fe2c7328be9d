//! [`named_enum!`]: a field-less enum whose every variant has a fixed
//! number and a fixed name, with the lookups written once.

/// Declares a `#[repr(u8)]` (or other integer) enum in which every variant
/// has a number and a name, and generates:
///
/// * `ALL`: every variant in declaration order;
/// * `NAMES`: their names, in the same order;
/// * `as_str(self)`: the variant's name;
/// * `from_name(&str)`: the variant with that name;
/// * `from_u8(u8)`: the variant with that number (only for `u8` enums).
///
/// ```
/// seckill_proto::named_enum! {
///     #[derive(Clone, Copy, Debug, PartialEq, Eq)]
///     pub enum Light: u8 {
///         Red = 1 => "red",
///         Green = 2 => "green",
///     }
/// }
/// assert_eq!(Light::ALL, [Light::Red, Light::Green]);
/// assert_eq!(Light::from_u8(2), Some(Light::Green));
/// assert_eq!(Light::from_name("red"), Some(Light::Red));
/// assert_eq!(Light::Green.as_str(), "green");
/// ```
#[macro_export]
macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident : $repr:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal => $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[repr($repr)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant = $value ),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: [$name; [$($text),+].len()] = [$(Self::$variant),+];
            /// The name of every variant, in the order of [`Self::ALL`].
            pub const NAMES: [&'static str; [$($text),+].len()] = [$($text),+];

            /// This variant's name.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }

            /// The variant named `name`, if any.
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $($text => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }

        $crate::named_enum!(@from $name $repr { $($variant = $value),+ });
    };
    (@from $name:ident u8 { $($variant:ident = $value:literal),+ }) => {
        impl $name {
            /// The variant numbered `v`, if any.
            pub const fn from_u8(v: u8) -> Option<Self> {
                match v {
                    $($value => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }
    };
    (@from $name:ident $repr:ident { $($variant:ident = $value:literal),+ }) => {};
}
