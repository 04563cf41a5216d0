"""Money: integer minor units with an ISO 4217 currency (Stripe's convention).

`MINOR_UNIT_EXPONENT` gives the number of decimals of each active ISO 4217 currency
(source: ISO 4217 list one, SIX Financial Information, 2024 edition). Amounts are always
`int` minor units: 2500 EUR = 25.00 €, 1500 XOF = 1500 F CFA, 45000 TND = 45.000 DT.
"""

from __future__ import annotations

_TWO_DECIMALS = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BRL BSD BTN BWP "
    "BYN BZD CAD CDF CHF CNY COP CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP "
    "GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT "
    "LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN "
    "NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP "
    "SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD UYU UZS VES "
    "WST XCD YER ZAR ZMW ZWL"
).split()
_ZERO_DECIMALS = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF".split()
_THREE_DECIMALS = "BHD IQD JOD KWD LYD OMR TND".split()
_FOUR_DECIMALS = "CLF UYW".split()

MINOR_UNIT_EXPONENT: dict[str, int] = {
    **{c: 2 for c in _TWO_DECIMALS},
    **{c: 0 for c in _ZERO_DECIMALS},
    **{c: 3 for c in _THREE_DECIMALS},
    **{c: 4 for c in _FOUR_DECIMALS},
}


def is_currency(code: str) -> bool:
    """True when `code` is an active ISO 4217 alphabetic code (upper case, 3 letters)."""
    return code in MINOR_UNIT_EXPONENT


def to_minor(amount_major: float, currency: str) -> int:
    """Convert a major-unit amount (25.5 EUR) to integer minor units (2550).

    Raises `KeyError` for an unknown currency. Rounds half to even, like Stripe.
    """
    scale: int = 10 ** MINOR_UNIT_EXPONENT[currency]
    return round(amount_major * scale)


def to_major(amount_minor: int, currency: str) -> float:
    """Convert integer minor units (2550 EUR) to a major-unit float (25.5)."""
    scale: int = 10 ** MINOR_UNIT_EXPONENT[currency]
    return amount_minor / scale
