"""Maple & Moss's catalogue: a handful of products in memory, with SVG placeholder pictures.

No database and no external assets: the pictures are drawn here, so the demo runs offline.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

CURRENCY = "USD"


@dataclass(frozen=True, slots=True)
class Category:
    slug: str
    name: str
    tagline: str


@dataclass(frozen=True, slots=True)
class Product:
    sku: str
    name: str
    category: str
    price_cents: int
    blurb: str
    colors: tuple[str, str, str]  # background top, background bottom, the object itself
    shape: str

    @property
    def price(self) -> float:
        return self.price_cents / 100

    @property
    def price_text(self) -> str:
        return money(self.price_cents)


def money(cents: int) -> str:
    return f"${cents / 100:,.2f}"


CATEGORIES: tuple[Category, ...] = (
    Category("home-decor", "Home decor", "Slow-made pieces for quiet rooms."),
    Category("kitchen", "Kitchen", "Everyday tools in wood, clay and linen."),
    Category("garden", "Garden", "For balconies, back yards and windowsills."),
)

PRODUCTS: tuple[Product, ...] = (
    Product(
        "mm-vase-01",
        "Speckled stoneware vase",
        "home-decor",
        3400,
        "Wheel-thrown in small batches, glazed in oat white with iron speckles. 24 cm tall.",
        ("#efe6da", "#dccbb6", "#f8f4ee"),
        "vase",
    ),
    Product(
        "mm-throw-02",
        "Washed linen throw",
        "home-decor",
        7900,
        "Heavyweight European linen, stone-washed until soft, with a hand-knotted fringe.",
        ("#e3e8e1", "#c8d3c6", "#7d9479"),
        "throw",
    ),
    Product(
        "mm-candle-03",
        "Fig & cedar candle",
        "home-decor",
        2400,
        "Coconut-soy wax in a reusable amber jar. About 50 hours of slow, even burn.",
        ("#f1e4d3", "#e2c9a6", "#a8683a"),
        "candle",
    ),
    Product(
        "mm-mug-04",
        "Hand-thrown mug",
        "kitchen",
        1800,
        "Holds 350 ml, fits the hand, survives the dishwasher. Each one slightly different.",
        ("#e8ecef", "#cfd8de", "#3f5a6b"),
        "mug",
    ),
    Product(
        "mm-board-05",
        "Olive wood board",
        "kitchen",
        5600,
        "Cut from a single piece of Tuscan olive wood; oiled, ready for bread and cheese.",
        ("#f3eadf", "#e3d2bd", "#9b7048"),
        "board",
    ),
    Product(
        "mm-bowls-06",
        "Nesting bowls, set of three",
        "kitchen",
        4800,
        "Matte stoneware in three sizes that stack into one. Oven and microwave safe.",
        ("#f4e9e4", "#e7cfc5", "#c0583a"),
        "bowls",
    ),
    Product(
        "mm-planter-07",
        "Terracotta planter pair",
        "garden",
        4200,
        "Unglazed terracotta that breathes, with saucers. 14 and 18 cm across.",
        ("#f3e7dc", "#e5cdb6", "#c46a3f"),
        "planter",
    ),
    Product(
        "mm-shears-08",
        "Forged garden shears",
        "garden",
        3800,
        "Carbon-steel blades, ash handles, a spring that lasts. Sharpened by hand.",
        ("#e4ebe2", "#cbd8c7", "#4c5b4a"),
        "shears",
    ),
)

_BY_SKU = {product.sku: product for product in PRODUCTS}
_CATEGORY_BY_SLUG = {category.slug: category for category in CATEGORIES}


def product(sku: str) -> Product | None:
    return _BY_SKU.get(sku)


def category(slug: str) -> Category | None:
    return _CATEGORY_BY_SLUG.get(slug)


def in_category(slug: str) -> list[Product]:
    return [item for item in PRODUCTS if item.category == slug]


def search(query: str) -> list[Product]:
    """Every product whose name, blurb or category mentions each word of the query."""
    words = [word for word in query.lower().split() if word]
    if not words:
        return []
    results = []
    for item in PRODUCTS:
        haystack = f"{item.name} {item.blurb} {item.category.replace('-', ' ')}".lower()
        if all(word in haystack for word in words):
            results.append(item)
    return results


# --- pictures ------------------------------------------------------------------------------------

_SHAPES: dict[str, str] = {
    "vase": (
        '<path d="M170 110 h60 v22 c0 18 42 40 42 98 c0 52 -30 80 -72 80 c-42 0 -72 -28 -72 -80 '
        'c0 -58 42 -80 42 -98 z" fill="{c}" stroke="#00000014" stroke-width="3"/>'
        '<g fill="#6b5a4a" opacity=".45"><circle cx="180" cy="220" r="2.5"/><circle cx="214" cy="250" r="2"/>'
        '<circle cx="236" cy="205" r="2.5"/><circle cx="196" cy="280" r="2"/>'
        '<circle cx="160" cy="250" r="2"/></g>'
        '<path d="M200 112 c-6 -30 -30 -52 -52 -60 M200 112 c10 -36 34 -54 58 -58" stroke="#7d9479" '
        'stroke-width="5" fill="none" stroke-linecap="round"/>'
    ),
    "throw": (
        '<rect x="95" y="150" width="210" height="150" rx="16" fill="{c}"/>'
        '<rect x="95" y="150" width="210" height="48" rx="16" fill="#ffffff" opacity=".18"/>'
        '<path d="M110 300 v22 M130 300 v22 M150 300 v22 M170 300 v22 M190 300 v22 M210 300 v22 M230 300 v22 '
        'M250 300 v22 M270 300 v22 M290 300 v22" stroke="{c}" stroke-width="4" stroke-linecap="round"/>'
        '<path d="M95 225 h210" stroke="#00000020" stroke-width="3"/>'
    ),
    "candle": (
        '<rect x="140" y="170" width="120" height="140" rx="18" fill="{c}" opacity=".9"/>'
        '<rect x="152" y="200" width="96" height="60" rx="6" fill="#f8f1e6"/>'
        '<text x="200" y="236" font-family="Georgia, serif" font-size="15" text-anchor="middle" '
        'fill="#6b4a2b">FIG &amp; CEDAR</text>'
        '<path d="M200 168 v-22" stroke="#3b2a1a" stroke-width="4"/>'
        '<path d="M200 98 c14 18 14 34 0 44 c-14 -10 -14 -26 0 -44 z" fill="#f2b43c"/>'
    ),
    "mug": (
        '<rect x="130" y="150" width="120" height="150" rx="20" fill="{c}"/>'
        '<path d="M250 185 c48 0 48 80 0 80" stroke="{c}" stroke-width="18" fill="none"/>'
        '<rect x="130" y="150" width="120" height="24" rx="12" fill="#ffffff" opacity=".25"/>'
        '<path d="M165 130 c-10 -14 10 -22 0 -36 M195 130 c-10 -14 10 -22 0 -36" stroke="#ffffff" '
        'stroke-width="5" fill="none" stroke-linecap="round" opacity=".9"/>'
    ),
    "board": (
        '<rect x="110" y="150" width="200" height="130" rx="40" fill="{c}"/>'
        '<rect x="300" y="195" width="50" height="40" rx="14" fill="{c}"/>'
        '<circle cx="336" cy="215" r="7" fill="#e3d2bd"/>'
        '<path d="M140 190 c40 10 80 -8 140 6 M140 230 c50 12 90 -6 140 4" stroke="#00000022" '
        'stroke-width="3" fill="none"/>'
    ),
    "bowls": (
        '<path d="M100 200 h200 c0 70 -45 105 -100 105 c-55 0 -100 -35 -100 -105 z" fill="{c}"/>'
        '<path d="M130 175 h140 c0 50 -30 75 -70 75 c-40 0 -70 -25 -70 -75 z" fill="#e9a27f"/>'
        '<path d="M160 150 h80 c0 30 -18 45 -40 45 c-22 0 -40 -15 -40 -45 z" fill="#f6d6c4"/>'
    ),
    "planter": (
        '<path d="M95 200 h110 l-14 110 h-82 z" fill="{c}"/>'
        '<rect x="90" y="192" width="120" height="20" rx="6" fill="{c}"/>'
        '<path d="M225 230 h90 l-11 80 h-68 z" fill="{c}" opacity=".85"/>'
        '<rect x="220" y="224" width="100" height="16" rx="5" fill="{c}" opacity=".85"/>'
        '<path d="M150 192 c-30 -40 -20 -80 -5 -95 M150 192 c10 -50 40 -70 60 -72 '
        'M150 192 c-10 -30 -50 -40 -62 -38" '
        'stroke="#5f7d55" stroke-width="7" fill="none" stroke-linecap="round"/>'
        '<path d="M270 224 c-6 -30 10 -52 24 -58 M270 224 c-16 -22 -36 -26 -46 -24" stroke="#5f7d55" '
        'stroke-width="6" fill="none" stroke-linecap="round"/>'
    ),
    "shears": (
        '<path d="M200 210 l-70 -110 c-6 -10 6 -16 12 -8 l70 102 z" fill="#b9c3c9"/>'
        '<path d="M200 210 l70 -110 c6 -10 -6 -16 -12 -8 l-70 102 z" fill="#d5dde1"/>'
        '<rect x="150" y="215" width="34" height="100" rx="16" fill="{c}" transform="rotate(18 167 215)"/>'
        '<rect x="216" y="215" width="34" height="100" rx="16" fill="{c}" transform="rotate(-18 233 215)"/>'
        '<circle cx="200" cy="210" r="9" fill="#38453a"/>'
    ),
}


def product_svg(item: Product) -> str:
    """A 400x400 placeholder picture: a soft backdrop, a shadow and a simple drawing of the thing."""
    top, bottom, color = item.colors
    shape = _SHAPES.get(item.shape, '<circle cx="200" cy="210" r="80" fill="{c}"/>').replace("{c}", color)
    title = escape(item.name)
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 400 400" role="img" '
        f'aria-label="{title}"><title>{title}</title>'
        f'<defs><linearGradient id="g" x1="0" y1="0" x2="0" y2="1"><stop offset="0" stop-color="{top}"/>'
        f'<stop offset="1" stop-color="{bottom}"/></linearGradient></defs>'
        '<rect width="400" height="400" fill="url(#g)"/>'
        '<ellipse cx="200" cy="325" rx="130" ry="14" fill="#00000012"/>'
        f"{shape}</svg>"
    )
