"""Generate synthetic multi-label data sets.

Without options: the divorce-case style sample set, label.txt, train.txt, dev.txt, test.txt and
data.txt next to this script, byte-identical across runs (fixed seed).

With --num_labels N: a keyword set with many labels, for tests and benchmarks of label scale. Each
label owns a keyword of --keyword_length characters; labels are drawn with Zipf probabilities
(the label of rank k with weight 1 / k^--zipf), 1-3 per line, and a line holds its labels' keywords
among filler characters that no keyword uses, so a model that reads the keywords can be perfect.
Labels too rare to be drawn in train.txt stay in label.txt, as in real data.

Standard library only.
"""
from __future__ import annotations

import random
from pathlib import Path

from cli import POSITIVE_FLOAT, POSITIVE_INT, ArgumentParser

SEED = 2026
OUT_DIR = Path(__file__).parent
SPLITS: list[tuple[str, int]] = [("train", 480), ("dev", 120), ("test", 120)]
UNLABELED_SHARE = 0.03
# Share of labeled lines carrying 1, 2 and 3 labels.
LABEL_COUNT_SHARES: list[tuple[int, float]] = [(1, 0.50), (2, 0.35), (3, 0.15)]
MIN_LEN, MAX_LEN = 20, 90

# Label name -> sampling weight (tuned for an unbalanced distribution,
# roughly 45% of lines for the most frequent label and 6% for the rarest).
LABEL_WEIGHTS: dict[str, float] = {
    "婚后有子女": 0.34,
    "感情不和": 0.22,
    "准予离婚": 0.17,
    "有夫妻共同财产": 0.13,
    "支付抚养费": 0.095,
    "婚后分居": 0.075,
    "有夫妻共同债务": 0.05,
    "不动产分割": 0.035,
}
LABELS: list[str] = list(LABEL_WEIGHTS)

# Clause templates per label; {placeholders} are filled from SLOTS.
FRAGMENTS: dict[str, list[str]] = {
    "婚后有子女": [
        "婚后生育一{gender}，现年{age}岁",
        "双方育有一{gender}",
        "婚后育有{kids}",
        "于{year}年生育{child}{surname}某某",
        "婚生{gender}现随原告生活",
        "婚生{gender}{surname}某某现正在上{school}",
        "双方共同生育子女{pair}名",
        "婚后于{year}年{month}月生育一{gender}",
        "双方之{gender}目前在{city}上{school}",
        "婚后育有一个孩子，年仅{age}岁",
        "婚生{child}长期由{grand}照看",
    ],
    "有夫妻共同财产": [
        "婚后购置{car}一辆",
        "双方婚后共同存款{wan}万元",
        "夫妻共同财产有{assets}",
        "婚姻关系存续期间购买了{product}",
        "婚后双方共同经营一家{shop}",
        "被告名下有银行存款{wan}万元，系夫妻共同财产",
        "原告主张分割婚后所得的{product}",
        "双方在婚姻存续期间积累了一定的共同财产",
        "家中电视、冰箱等家电系婚后共同购买",
        "婚后以共同积蓄购买的{car}现由被告使用",
        "双方婚后共同出资{wan}万元购买了理财产品",
    ],
    "有夫妻共同债务": [
        "婚后为经营{shop}向{lender}借款{wan}万元",
        "双方尚欠{lender}借款{wan}万元未还",
        "夫妻共同债务{wan}万元由双方共同偿还",
        "婚姻存续期间以被告名义向银行贷款{wan}万元",
        "原告称婚后为家庭生活所负债务{wan}万元",
        "双方共同对外负有债务",
        "借款用于家庭日常开支，应属夫妻共同债务",
        "双方婚后共同向{surname}某借款{wan}万元",
        "信用卡欠款{wan}万元系为家庭生活所负",
        "被告主张婚后欠下装修款{wan}万元",
    ],
    "婚后分居": [
        "双方自{year}年起分居至今",
        "原、被告已分居{small}年有余",
        "{year}年{month}月被告搬回娘家居住，双方分居至今",
        "原告外出务工后双方长期分居",
        "婚后因琐事分居生活已满{small}年",
        "双方分居两地，互不往来",
        "自{year}年{month}月起双方便分开居住",
        "被告离家出走至今未归，双方分居",
        "分居期间双方未再共同生活",
        "原告于{year}年搬出共同住所独自居住",
    ],
    "准予离婚": [
        "准予原告{surname}某与被告{surname2}某离婚",
        "本院判决准予双方离婚",
        "原告要求离婚的诉讼请求，本院予以支持",
        "判决原、被告离婚",
        "现原告坚持离婚，应准予离婚",
        "故对原告的离婚请求予以准许",
        "双方一致同意离婚，本院予以确认",
        "经调解无效，应当准予离婚",
        "解除原告与被告的婚姻关系",
        "判决准予离婚",
    ],
    "支付抚养费": [
        "被告每月支付{child}抚养费{yuan}元",
        "由被告按月给付抚养费{yuan}元至孩子年满十八周岁",
        "抚养费每月{yuan}元由原告负担",
        "被告一次性支付抚养费{wan}万元",
        "原告请求被告承担子女抚养费",
        "被告应于每月{day}日前支付抚养费{yuan}元",
        "抚养费按被告月收入的{pct}给付",
        "子女抚养费及教育费、医疗费由双方各负担一半",
        "被告同意每年支付抚养费{wan}万元",
        "被告应补付拖欠的抚养费{yuan}元",
    ],
    "不动产分割": [
        "位于{city}{road}的房屋一套归原告所有",
        "婚后购买的商品房由双方平分",
        "{city}某小区住房一套判归被告，被告补偿原告房屋折价款{wan}万元",
        "双方共有的宅基地及房屋依法分割",
        "原告请求分割位于{city}的房产",
        "婚后共同出资购买的门面房归被告所有",
        "诉争房屋系婚后购买，应予分割",
        "房屋产权归原告，剩余房贷由原告偿还",
        "双方名下的两处房产各分得一处",
        "婚后自建楼房一栋，按各一半分割",
    ],
    "感情不和": [
        "婚后双方因家庭琐事经常争吵",
        "夫妻感情确已破裂",
        "双方性格不合，感情淡漠",
        "婚后夫妻关系一直不和睦",
        "被告脾气暴躁，双方矛盾不断",
        "双方缺乏沟通，感情逐渐破裂",
        "因生活习惯差异较大，双方经常发生矛盾",
        "婚前缺乏了解，婚后感情基础薄弱",
        "双方已无和好可能",
        "原告称双方感情早已名存实亡",
        "因被告沉迷赌博，夫妻感情恶化",
    ],
}

# Neutral clauses that carry no label.
FILLERS: list[str] = [
    "原告{surname}某与被告{surname2}某经人介绍相识",
    "双方于{year}年{month}月登记结婚",
    "原、被告均系{city}人",
    "原告于{year}年{month}月{day}日向本院提起诉讼",
    "本院受理后依法适用简易程序公开开庭进行了审理",
    "被告经本院合法传唤未到庭参加诉讼",
    "{city}人民法院审理了此案",
    "上述事实有结婚证及当事人陈述在卷佐证",
    "双方系自由恋爱",
    "庭审中双方各执一词",
    "案件受理费{fee}元由原告负担",
    "双方均系初婚",
]
# Neutral openers; they only make sense at the start of a sentence.
LEAD_INS: list[str] = ["经审理查明", "本院认为", "原告诉称", "被告辩称"]
LEAD_IN_SHARE = 0.25

CN_NUM = ["零", "一", "二", "三", "四", "五", "六", "七", "八", "九", "十",
          "十一", "十二", "十三", "十四", "十五", "十六"]

SLOTS: dict[str, list[str]] = {
    "gender": ["子", "女"],
    "child": ["儿子", "女儿"],
    "kids": ["一子一女", "两个女儿", "两个儿子", "一子", "一女"],
    "pair": ["两", "三"],
    "age": CN_NUM[1:17],
    "small": CN_NUM[1:9],
    "school": ["幼儿园", "小学", "初中", "高中"],
    "grand": ["祖父母", "外祖父母", "奶奶", "外婆"],
    "surname": list("张王李赵刘陈杨黄周吴徐孙马朱胡郭何林罗高"),
    "surname2": list("梁宋郑谢韩唐冯于董萧程曹袁邓许傅沈曾彭吕"),
    "city": ["北京市", "上海市", "郑州市", "成都市", "武汉市", "长沙市",
             "南京市", "杭州市", "西安市", "济南市", "合肥市", "南昌市"],
    "road": ["建设路", "人民路", "解放路", "中山路", "文化路", "新华街"],
    "year": [str(y) for y in range(2003, 2020)],
    "month": [str(m) for m in range(1, 13)],
    "day": [str(d) for d in range(1, 29)],
    "wan": ["2", "3", "5", "8", "10", "12", "15", "20", "30", "50"],
    "yuan": ["500", "600", "800", "1000", "1200", "1500", "2000"],
    "pct": ["百分之二十", "百分之二十五", "百分之三十"],
    "fee": ["150", "200", "300", "460"],
    "car": ["小型轿车", "越野车", "面包车", "电动汽车"],
    "assets": ["家具家电若干", "存款及车辆", "股票和基金", "金银首饰若干"],
    "product": ["轿车", "理财产品", "股票", "商铺租赁权"],
    "shop": ["超市", "餐馆", "服装店", "五金店", "汽修厂"],
    "lender": ["亲友", "银行", "同事", "小额贷款公司"],
}


def fill(template: str, rng: random.Random) -> str:
    """Fill every {slot} in a template with a random value."""
    keys = sorted({part.split("}")[0] for part in template.split("{")[1:]})
    return template.format(**{k: rng.choice(SLOTS[k]) for k in keys})


def join_clauses(clauses: list[str], rng: random.Random) -> str:
    """Join clauses with Chinese punctuation and end with a full stop."""
    text = clauses[0]
    for clause in clauses[1:]:
        text += rng.choices(["，", "；", "。"], weights=[0.75, 0.15, 0.10])[0] + clause
    return text + "。"


def pick_labels(k: int, rng: random.Random) -> list[str]:
    """Weighted sampling of k distinct labels, returned in label.txt order."""
    pool = dict(LABEL_WEIGHTS)
    chosen: list[str] = []
    for _ in range(k):
        name = rng.choices(list(pool), weights=list(pool.values()))[0]
        chosen.append(name)
        del pool[name]
    return [name for name in LABELS if name in chosen]


def make_text(labels: list[str], rng: random.Random) -> str:
    """Compose one sentence expressing exactly the given labels."""
    while True:
        clauses = [fill(rng.choice(FRAGMENTS[name]), rng) for name in labels]
        n_fill = rng.choice([2, 3, 4]) if not labels else rng.choice([0, 1, 1, 2])
        clauses += [fill(t, rng) for t in rng.sample(FILLERS, n_fill)]
        rng.shuffle(clauses)
        text = join_clauses(clauses, rng)
        if rng.random() < LEAD_IN_SHARE:
            text = rng.choice(LEAD_INS) + "，" + text
        if MIN_LEN <= len(text) <= MAX_LEN:
            return text


def label_counts_plan(n: int, rng: random.Random) -> list[int]:
    """Exact, shuffled list of per-line label counts for a split of n lines."""
    n_unlabeled = round(n * UNLABELED_SHARE)
    n_labeled = n - n_unlabeled
    plan = [0] * n_unlabeled
    for k, share in LABEL_COUNT_SHARES[:-1]:
        plan += [k] * round(n_labeled * share)
    plan += [LABEL_COUNT_SHARES[-1][0]] * (n - len(plan))
    rng.shuffle(plan)
    return plan


def write_lines(path: Path, lines: list[str]) -> None:
    """Write UTF-8 (no BOM) with LF endings and a final newline."""
    with path.open("w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(lines) + "\n")


# Keyword and filler characters come from disjoint blocks of CJK ideographs.
KEYWORD_CHARS = [chr(code) for code in range(0x4E00, 0x4E00 + 400)]
FILLER_CHARS = [chr(code) for code in range(0x5E00, 0x5E00 + 300)]

parser = ArgumentParser(description=__doc__)
parser.add_argument("--num_labels", type=POSITIVE_INT, default=None, help="Write a keyword set with this many labels instead of the sample set.")
parser.add_argument("--output_dir", default=None, help="Where the keyword set goes (required with --num_labels).")
parser.add_argument("--zipf", type=POSITIVE_FLOAT, default=1.0, help="Zipf exponent of the label frequencies.")
parser.add_argument("--keyword_length", type=POSITIVE_INT, default=2, help="Characters per label keyword.")
parser.add_argument("--train_lines", type=POSITIVE_INT, default=6000, help="Lines of train.txt.")
parser.add_argument("--dev_lines", type=POSITIVE_INT, default=1000, help="Lines of dev.txt and of test.txt.")
parser.add_argument("--seed", type=POSITIVE_INT, default=SEED, help="Random seed of the keyword set.")


def keyword_set_lines(keywords: list[str], weights: list[float], lines: int, rng: random.Random) -> list[str]:
    """`text<TAB>label,label` lines: 1-3 Zipf-drawn labels, their keywords among filler characters."""
    rows = []
    for _ in range(lines):
        chosen = sorted(set(rng.choices(range(len(keywords)), weights=weights, k=rng.choice([1, 1, 2, 3]))))
        pieces = ["".join(rng.choices(FILLER_CHARS, k=rng.randint(2, 8))) for _ in range(len(chosen) + 1)]
        text = pieces[0] + "".join(keywords[label] + piece for label, piece in zip(chosen, pieces[1:]))
        rows.append(text + "\t" + ",".join(f"标签{label:05d}" for label in chosen))
    return rows


def write_keyword_set(args) -> None:
    output = Path(args.output_dir)
    rng = random.Random(args.seed)
    keywords: set[str] = set()
    if args.num_labels > len(KEYWORD_CHARS) ** args.keyword_length // 2:
        parser.error(f"--num_labels {args.num_labels} needs longer keywords than --keyword_length {args.keyword_length}")
    while len(keywords) < args.num_labels:
        keywords.add("".join(rng.choices(KEYWORD_CHARS, k=args.keyword_length)))
    ordered = sorted(keywords)
    rng.shuffle(ordered)
    weights = [1 / (rank + 1) ** args.zipf for rank in range(args.num_labels)]
    output.mkdir(parents=True, exist_ok=True)
    write_lines(output / "label.txt", [f"标签{label:05d}" for label in range(args.num_labels)])
    for name, lines in (("train", args.train_lines), ("dev", args.dev_lines), ("test", args.dev_lines)):
        write_lines(output / f"{name}.txt", keyword_set_lines(ordered, weights, lines, rng))
    test_lines = (output / "test.txt").read_text(encoding="utf-8").splitlines()
    write_lines(output / "data.txt", [line.split("\t")[0] for line in test_lines])
    print(f"{args.num_labels} labels (Zipf {args.zipf}), {args.train_lines}/{args.dev_lines}/{args.dev_lines} "
          f"lines written to {output}")


def main(argv: list[str] | None = None) -> None:
    args = parser.parse_args(argv)
    if args.num_labels is not None:
        if args.output_dir is None:
            parser.error("--num_labels needs --output_dir")
        write_keyword_set(args)
        return
    write_sample_set()


def write_sample_set() -> None:
    rng = random.Random(SEED)
    seen: set[str] = set()  # keeps sentences unique across all splits
    splits: dict[str, list[tuple[str, list[str]]]] = {}
    for name, size in SPLITS:
        rows: list[tuple[str, list[str]]] = []
        for k in label_counts_plan(size, rng):
            labels = pick_labels(k, rng)
            text = make_text(labels, rng)
            while text in seen:
                text = make_text(labels, rng)
            seen.add(text)
            rows.append((text, labels))
        splits[name] = rows

    write_lines(OUT_DIR / "label.txt", LABELS)
    for name, rows in splits.items():
        lines = [f"{t}\t{','.join(ls)}" if ls else t for t, ls in rows]
        write_lines(OUT_DIR / f"{name}.txt", lines)
    write_lines(OUT_DIR / "data.txt", [t for t, _ in splits["test"]])


if __name__ == "__main__":
    main()
