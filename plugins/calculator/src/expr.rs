//! Parsing and evaluation of arithmetic expressions. Nothing is ever executed: the input becomes
//! an AST, and the AST is evaluated with explicit checks for overflow, domains and size.

use std::fmt;

/// The longest expression accepted, in bytes.
pub const MAX_LENGTH: usize = 1000;
/// The deepest nesting of parentheses, unary operators and calls accepted.
pub const MAX_DEPTH: usize = 64;
/// The largest integer argument of `factorial` whose result is finite in f64.
const MAX_FACTORIAL: f64 = 170.0;

#[derive(Debug, Clone, PartialEq)]
pub enum CalcError {
    TooLong(usize),
    TooDeep,
    Syntax(String),
    UnknownName(String),
    UnknownFunction(String),
    Arity { function: &'static str, expected: &'static str, got: usize },
    DivisionByZero,
    Domain(String),
    TooLarge(String),
}

/// A name as an error echoes it: its first 40 characters, so an error never carries the
/// whole of a long input.
fn abbreviated(name: &str) -> String {
    match name.char_indices().nth(40) {
        Some((cut, _)) => format!("{}...", &name[..cut]),
        None => name.to_string(),
    }
}

impl fmt::Display for CalcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CalcError::TooLong(n) => write!(f, "expression is too long ({n} bytes, the limit is {MAX_LENGTH})"),
            CalcError::TooDeep => write!(f, "expression is nested too deeply (the limit is {MAX_DEPTH} levels)"),
            CalcError::Syntax(m) => write!(f, "syntax error: {m}"),
            CalcError::UnknownName(n) => write!(f, "unknown name '{}'", abbreviated(n)),
            CalcError::UnknownFunction(n) => write!(f, "unknown function '{}'", abbreviated(n)),
            CalcError::Arity { function, expected, got } => {
                write!(f, "{function}() takes {expected} argument(s), {got} given")
            }
            CalcError::DivisionByZero => write!(f, "division by zero"),
            CalcError::Domain(m) => write!(f, "math domain error: {m}"),
            CalcError::TooLarge(m) => write!(f, "result too large: {m}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Token {
    Num(f64),
    Ident(usize, usize),
    Plus,
    Minus,
    Star,
    Slash,
    SlashSlash,
    Percent,
    Pow,
    LParen,
    RParen,
    Comma,
}

fn tokenize(src: &str) -> Result<Vec<Token>, CalcError> {
    let bytes = src.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        i += 1;
        let token = match c {
            b' ' | b'\t' | b'\n' | b'\r' => continue,
            b'+' => Token::Plus,
            b'-' => Token::Minus,
            b'*' if bytes.get(i) == Some(&b'*') => {
                i += 1;
                Token::Pow
            }
            b'*' => Token::Star,
            b'/' if bytes.get(i) == Some(&b'/') => {
                i += 1;
                Token::SlashSlash
            }
            b'/' => Token::Slash,
            b'%' => Token::Percent,
            b'^' => Token::Pow,
            b'(' => Token::LParen,
            b')' => Token::RParen,
            b',' => Token::Comma,
            b'0'..=b'9' | b'.' => {
                while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.' || bytes[i] == b'_') {
                    i += 1;
                }
                if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
                    let mut j = i + 1;
                    if j < bytes.len() && (bytes[j] == b'+' || bytes[j] == b'-') {
                        j += 1;
                    }
                    if j < bytes.len() && bytes[j].is_ascii_digit() {
                        i = j;
                        while i < bytes.len() && bytes[i].is_ascii_digit() {
                            i += 1;
                        }
                    }
                }
                let text: String = src[start..i].chars().filter(|&c| c != '_').collect();
                let value: f64 =
                    text.parse().map_err(|_| CalcError::Syntax(format!("invalid number '{}'", &src[start..i])))?;
                Token::Num(value)
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                Token::Ident(start, i)
            }
            _ => {
                let ch = src[start..].chars().next().unwrap_or('?');
                return Err(CalcError::Syntax(format!("unexpected character '{ch}' at position {start}")));
            }
        };
        tokens.push(token);
    }
    Ok(tokens)
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Num(f64),
    Name(String),
    Neg(Box<Expr>),
    Binary(Token, Box<Expr>, Box<Expr>),
    Call(String, Vec<Expr>),
}

struct Parser<'a> {
    src: &'a str,
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<Token> {
        self.tokens.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.peek();
        self.pos += 1;
        t
    }

    fn descend(&mut self) -> Result<(), CalcError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH { Err(CalcError::TooDeep) } else { Ok(()) }
    }

    // expr := term (('+' | '-') term)*
    fn expr(&mut self) -> Result<Expr, CalcError> {
        let mut left = self.term()?;
        while let Some(op @ (Token::Plus | Token::Minus)) = self.peek() {
            self.pos += 1;
            left = Expr::Binary(op, Box::new(left), Box::new(self.term()?));
        }
        Ok(left)
    }

    // term := unary (('*' | '/' | '//' | '%') unary)*
    fn term(&mut self) -> Result<Expr, CalcError> {
        let mut left = self.unary()?;
        while let Some(op @ (Token::Star | Token::Slash | Token::SlashSlash | Token::Percent)) = self.peek() {
            self.pos += 1;
            left = Expr::Binary(op, Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    // unary := ('-' | '+') unary | power
    fn unary(&mut self) -> Result<Expr, CalcError> {
        match self.peek() {
            Some(Token::Minus) => {
                self.pos += 1;
                self.descend()?;
                let inner = self.unary()?;
                self.depth -= 1;
                Ok(Expr::Neg(Box::new(inner)))
            }
            Some(Token::Plus) => {
                self.pos += 1;
                self.descend()?;
                let inner = self.unary()?;
                self.depth -= 1;
                Ok(inner)
            }
            _ => self.power(),
        }
    }

    // power := atom ('**' unary)?   (right-associative, binds tighter than unary minus on its left)
    fn power(&mut self) -> Result<Expr, CalcError> {
        let base = self.atom()?;
        if self.peek() == Some(Token::Pow) {
            self.pos += 1;
            self.descend()?;
            let exponent = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Binary(Token::Pow, Box::new(base), Box::new(exponent)));
        }
        Ok(base)
    }

    fn atom(&mut self) -> Result<Expr, CalcError> {
        match self.next() {
            Some(Token::Num(v)) => Ok(Expr::Num(v)),
            Some(Token::LParen) => {
                self.descend()?;
                let inner = self.expr()?;
                self.depth -= 1;
                self.expect_rparen()?;
                Ok(inner)
            }
            Some(Token::Ident(s, e)) => {
                let name = self.src[s..e].to_string();
                if self.peek() != Some(Token::LParen) {
                    return Ok(Expr::Name(name));
                }
                self.pos += 1;
                self.descend()?;
                let mut args = Vec::new();
                if self.peek() != Some(Token::RParen) {
                    loop {
                        args.push(self.expr()?);
                        if self.peek() != Some(Token::Comma) {
                            break;
                        }
                        self.pos += 1;
                    }
                }
                self.depth -= 1;
                self.expect_rparen()?;
                Ok(Expr::Call(name, args))
            }
            Some(t) => Err(CalcError::Syntax(format!("unexpected {}", describe(t)))),
            None => Err(CalcError::Syntax("unexpected end of expression".into())),
        }
    }

    fn expect_rparen(&mut self) -> Result<(), CalcError> {
        match self.next() {
            Some(Token::RParen) => Ok(()),
            Some(t) => Err(CalcError::Syntax(format!("expected ')' but found {}", describe(t)))),
            None => Err(CalcError::Syntax("missing ')'".into())),
        }
    }
}

fn describe(t: Token) -> String {
    match t {
        Token::Num(v) => format!("number {v}"),
        Token::Ident(..) => "name".into(),
        Token::Plus => "'+'".into(),
        Token::Minus => "'-'".into(),
        Token::Star => "'*'".into(),
        Token::Slash => "'/'".into(),
        Token::SlashSlash => "'//'".into(),
        Token::Percent => "'%'".into(),
        Token::Pow => "'**'".into(),
        Token::LParen => "'('".into(),
        Token::RParen => "')'".into(),
        Token::Comma => "','".into(),
    }
}

/// Parses and evaluates `src`.
pub fn evaluate(src: &str) -> Result<f64, CalcError> {
    if src.len() > MAX_LENGTH {
        return Err(CalcError::TooLong(src.len()));
    }
    let tokens = tokenize(src)?;
    if tokens.is_empty() {
        return Err(CalcError::Syntax("empty expression".into()));
    }
    let mut parser = Parser { src, tokens, pos: 0, depth: 0 };
    let ast = parser.expr()?;
    if let Some(t) = parser.peek() {
        return Err(CalcError::Syntax(format!("unexpected {} after the expression", describe(t))));
    }
    eval(&ast)
}

fn finite(value: f64, what: &str) -> Result<f64, CalcError> {
    if value.is_finite() {
        Ok(value)
    } else if value.is_nan() {
        Err(CalcError::Domain(format!("{what} is undefined")))
    } else {
        Err(CalcError::TooLarge(format!("{what} overflows a 64-bit float")))
    }
}

fn eval(e: &Expr) -> Result<f64, CalcError> {
    match e {
        Expr::Num(v) => finite(*v, "literal"),
        Expr::Name(n) => match n.as_str() {
            "pi" => Ok(std::f64::consts::PI),
            "e" => Ok(std::f64::consts::E),
            "tau" => Ok(std::f64::consts::TAU),
            _ => Err(CalcError::UnknownName(n.clone())),
        },
        Expr::Neg(inner) => Ok(-eval(inner)?),
        Expr::Binary(op, l, r) => {
            let (a, b) = (eval(l)?, eval(r)?);
            let value = match op {
                Token::Plus => a + b,
                Token::Minus => a - b,
                Token::Star => a * b,
                Token::Slash if b == 0.0 => return Err(CalcError::DivisionByZero),
                Token::Slash => a / b,
                Token::SlashSlash | Token::Percent if b == 0.0 => {
                    return Err(CalcError::DivisionByZero);
                }
                Token::SlashSlash => (a / b).floor(),
                // Python semantics: the result takes the sign of the divisor.
                Token::Percent => a - b * (a / b).floor(),
                Token::Pow => power(a, b)?,
                _ => unreachable!("the parser only builds binary nodes for operators"),
            };
            finite(value, "the result")
        }
        Expr::Call(name, args) => {
            let values = args.iter().map(eval).collect::<Result<Vec<_>, _>>()?;
            call(name, &values)
        }
    }
}

fn power(a: f64, b: f64) -> Result<f64, CalcError> {
    if a == 0.0 && b < 0.0 {
        return Err(CalcError::DivisionByZero);
    }
    if a < 0.0 && b.fract() != 0.0 {
        return Err(CalcError::Domain("negative number raised to a fractional power".into()));
    }
    finite(a.powf(b), "the power")
}

fn integer(function: &str, v: f64) -> Result<i64, CalcError> {
    if v.fract() != 0.0 || v.abs() > 9.007_199_254_740_992e15 {
        return Err(CalcError::Domain(format!("{function}() needs integers, got {v}")));
    }
    Ok(v as i64)
}

fn gcd(mut a: i64, mut b: i64) -> i64 {
    (a, b) = (a.abs(), b.abs());
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn factorial(n: f64) -> Result<f64, CalcError> {
    if n < 0.0 || n.fract() != 0.0 {
        return Err(CalcError::Domain(format!("factorial() needs a non-negative integer, got {n}")));
    }
    if n > MAX_FACTORIAL {
        return Err(CalcError::TooLarge(format!("factorial({n}) exceeds the largest 64-bit float")));
    }
    Ok((1..=n as u32).fold(1.0, |acc, k| acc * f64::from(k)))
}

fn combinations(n: f64, k: f64, permutations: bool) -> Result<f64, CalcError> {
    let name = if permutations { "perm" } else { "comb" };
    let (n, k) = (integer(name, n)?, integer(name, k)?);
    if n < 0 || k < 0 {
        return Err(CalcError::Domain(format!("{name}() needs non-negative integers")));
    }
    if k > n {
        return Ok(0.0);
    }
    let k = if permutations { k } else { k.min(n - k) };
    let mut acc = 1.0f64;
    for i in 0..k {
        acc *= (n - i) as f64;
        if !permutations {
            acc /= (i + 1) as f64;
        }
        if !acc.is_finite() {
            return Err(CalcError::TooLarge(format!("{name}({n}, {k}) exceeds the largest 64-bit float")));
        }
    }
    Ok(acc.round())
}

/// The functions, by name, with the number of arguments each takes (`None` = one or more).
pub const FUNCTIONS: &[(&str, Option<usize>)] = &[
    ("sin", Some(1)),
    ("cos", Some(1)),
    ("tan", Some(1)),
    ("asin", Some(1)),
    ("acos", Some(1)),
    ("atan", Some(1)),
    ("atan2", Some(2)),
    ("sinh", Some(1)),
    ("cosh", Some(1)),
    ("tanh", Some(1)),
    ("asinh", Some(1)),
    ("acosh", Some(1)),
    ("atanh", Some(1)),
    ("exp", Some(1)),
    ("exp2", Some(1)),
    ("expm1", Some(1)),
    ("ln", Some(1)),
    ("log", None),
    ("log10", Some(1)),
    ("log2", Some(1)),
    ("log1p", Some(1)),
    ("sqrt", Some(1)),
    ("cbrt", Some(1)),
    ("pow", Some(2)),
    ("abs", Some(1)),
    ("floor", Some(1)),
    ("ceil", Some(1)),
    ("round", None),
    ("trunc", Some(1)),
    ("sign", Some(1)),
    ("factorial", Some(1)),
    ("gcd", None),
    ("lcm", None),
    ("min", None),
    ("max", None),
    ("hypot", None),
    ("degrees", Some(1)),
    ("radians", Some(1)),
    ("fmod", Some(2)),
    ("comb", Some(2)),
    ("perm", Some(2)),
    ("sum", None),
    ("mean", None),
];

fn call(name: &str, args: &[f64]) -> Result<f64, CalcError> {
    let (function, arity) = FUNCTIONS
        .iter()
        .find(|(n, _)| *n == name)
        .copied()
        .ok_or_else(|| CalcError::UnknownFunction(name.to_string()))?;
    let arity_ok = match (function, arity) {
        ("log" | "round", _) => matches!(args.len(), 1 | 2),
        (_, Some(n)) => args.len() == n,
        (_, None) => !args.is_empty(),
    };
    if !arity_ok {
        let expected = match (function, arity) {
            ("log" | "round", _) => "1 or 2",
            (_, Some(1)) => "1",
            (_, Some(2)) => "2",
            _ => "at least 1",
        };
        return Err(CalcError::Arity { function, expected, got: args.len() });
    }
    let x = args[0];
    let domain = |cond: bool, msg: &str| {
        if cond { Ok(()) } else { Err(CalcError::Domain(format!("{function}(): {msg}"))) }
    };
    let value = match function {
        "sin" => x.sin(),
        "cos" => x.cos(),
        "tan" => x.tan(),
        "asin" => {
            domain((-1.0..=1.0).contains(&x), "argument must be in [-1, 1]")?;
            x.asin()
        }
        "acos" => {
            domain((-1.0..=1.0).contains(&x), "argument must be in [-1, 1]")?;
            x.acos()
        }
        "atan" => x.atan(),
        "atan2" => x.atan2(args[1]),
        "sinh" => x.sinh(),
        "cosh" => x.cosh(),
        "tanh" => x.tanh(),
        "asinh" => x.asinh(),
        "acosh" => {
            domain(x >= 1.0, "argument must be >= 1")?;
            x.acosh()
        }
        "atanh" => {
            domain(x > -1.0 && x < 1.0, "argument must be in (-1, 1)")?;
            x.atanh()
        }
        "exp" => x.exp(),
        "exp2" => x.exp2(),
        "expm1" => x.exp_m1(),
        "ln" | "log" | "log10" | "log2" => {
            domain(x > 0.0, "argument must be positive")?;
            match (function, args.get(1)) {
                ("log", Some(&base)) => {
                    domain(base > 0.0 && base != 1.0, "base must be positive and not 1")?;
                    x.ln() / base.ln()
                }
                ("log10", _) => x.log10(),
                ("log2", _) => x.log2(),
                _ => x.ln(),
            }
        }
        "log1p" => {
            domain(x > -1.0, "argument must be > -1")?;
            x.ln_1p()
        }
        "sqrt" => {
            domain(x >= 0.0, "argument must be non-negative")?;
            x.sqrt()
        }
        "cbrt" => x.cbrt(),
        "pow" => power(x, args[1])?,
        "abs" => x.abs(),
        "floor" => x.floor(),
        "ceil" => x.ceil(),
        "round" => match args.get(1) {
            None => x.round(),
            Some(&digits) => {
                let d = integer("round", digits)?.clamp(-15, 15) as i32;
                let scale = 10f64.powi(d);
                (x * scale).round() / scale
            }
        },
        "trunc" => x.trunc(),
        "sign" => {
            if x == 0.0 {
                0.0
            } else {
                x.signum()
            }
        }
        "factorial" => factorial(x)?,
        "gcd" | "lcm" => {
            let mut acc = integer(function, x)?;
            for &v in &args[1..] {
                let v = integer(function, v)?;
                acc = if function == "gcd" {
                    gcd(acc, v)
                } else if acc == 0 || v == 0 {
                    0
                } else {
                    (acc / gcd(acc, v))
                        .checked_mul(v)
                        .map(i64::abs)
                        .ok_or_else(|| CalcError::TooLarge("lcm() overflows a 64-bit integer".into()))?
                };
            }
            acc.abs() as f64
        }
        "min" => args.iter().copied().fold(f64::INFINITY, f64::min),
        "max" => args.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        "hypot" => args.iter().fold(0.0f64, |acc, v| acc.hypot(*v)),
        "degrees" => x.to_degrees(),
        "radians" => x.to_radians(),
        "fmod" => {
            if args[1] == 0.0 {
                return Err(CalcError::DivisionByZero);
            }
            x % args[1]
        }
        "comb" => combinations(x, args[1], false)?,
        "perm" => combinations(x, args[1], true)?,
        "sum" => args.iter().sum(),
        "mean" => args.iter().sum::<f64>() / args.len() as f64,
        _ => unreachable!("every name in FUNCTIONS has an arm"),
    };
    finite(value, &format!("{function}()"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(src: &str) -> f64 {
        evaluate(src).unwrap_or_else(|e| panic!("{src}: {e}"))
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn arithmetic_and_precedence() {
        assert_eq!(ok("1 + 2 * 3"), 7.0);
        assert_eq!(ok("(1 + 2) * 3"), 9.0);
        assert_eq!(ok("2 ** 3 ** 2"), 512.0);
        assert_eq!(ok("-2 ** 2"), -4.0);
        assert_eq!(ok("2 ^ 10"), 1024.0);
        assert_eq!(ok("7 // 2"), 3.0);
        assert_eq!(ok("-7 % 3"), 2.0);
        assert_eq!(ok("1_000 + 1e3"), 2000.0);
        assert_eq!(ok("--3"), 3.0);
    }

    #[test]
    fn seed_example() {
        assert_eq!(ok("sqrt(16) + sin(pi/2)"), 5.0);
    }

    #[test]
    fn functions_cover_every_family() {
        assert!(close(ok("asin(1)"), std::f64::consts::FRAC_PI_2));
        assert!(close(ok("atan2(1, 1)"), std::f64::consts::FRAC_PI_4));
        assert!(close(ok("cosh(0) + tanh(0) + asinh(0)"), 1.0));
        assert!(close(ok("log(8, 2)"), 3.0));
        assert!(close(ok("ln(e) + log10(1000) + log2(8)"), 7.0));
        assert!(close(ok("exp2(10) + expm1(0) + log1p(0)"), 1024.0));
        assert!(close(ok("cbrt(27) + hypot(3, 4)"), 8.0));
        assert_eq!(ok("factorial(10)"), 3_628_800.0);
        assert_eq!(ok("gcd(12, 18, 24) + lcm(4, 6)"), 18.0);
        assert_eq!(ok("min(3, 1, 2) + max(3, 1, 2)"), 4.0);
        assert_eq!(ok("round(2.567, 2)"), 2.57);
        assert_eq!(ok("floor(-1.5) + ceil(1.2) + trunc(-1.7) + sign(-3)"), -2.0);
        assert_eq!(ok("comb(5, 2) + perm(5, 2)"), 30.0);
        assert!(close(ok("degrees(pi) + radians(180)"), 180.0 + std::f64::consts::PI));
        assert!(close(ok("tau / 2"), std::f64::consts::PI));
        assert!(FUNCTIONS.len() >= 30);
    }

    #[test]
    fn clear_errors() {
        assert_eq!(evaluate("1/0"), Err(CalcError::DivisionByZero));
        assert_eq!(evaluate("5 % 0"), Err(CalcError::DivisionByZero));
        assert!(matches!(evaluate("sqrt(-1)"), Err(CalcError::Domain(_))));
        assert!(matches!(evaluate("log(0)"), Err(CalcError::Domain(_))));
        assert!(matches!(evaluate("acos(2)"), Err(CalcError::Domain(_))));
        assert_eq!(evaluate("foo + 1"), Err(CalcError::UnknownName("foo".into())));
        assert_eq!(evaluate("bar(1)"), Err(CalcError::UnknownFunction("bar".into())));
        assert!(matches!(evaluate("sin(1, 2)"), Err(CalcError::Arity { .. })));
        assert!(matches!(evaluate("1 +"), Err(CalcError::Syntax(_))));
        assert!(matches!(evaluate("(1"), Err(CalcError::Syntax(_))));
        assert!(matches!(evaluate("__import__('os')"), Err(CalcError::Syntax(_))));
    }

    #[test]
    fn huge_results_fail_fast() {
        assert!(matches!(evaluate("factorial(100000)"), Err(CalcError::TooLarge(_))));
        assert!(matches!(evaluate("9**9**9"), Err(CalcError::TooLarge(_))));
        assert!(matches!(evaluate("10 ** 400"), Err(CalcError::TooLarge(_))));
        assert!(matches!(evaluate("comb(100000, 50000)"), Err(CalcError::TooLarge(_))));
        assert!(matches!(evaluate("exp(1000)"), Err(CalcError::TooLarge(_))));
    }

    #[test]
    fn size_and_depth_limits() {
        let long = "1+".repeat(600) + "1";
        assert!(matches!(evaluate(&long), Err(CalcError::TooLong(_))));
        let deep = "(".repeat(100) + "1" + &")".repeat(100);
        assert_eq!(evaluate(&deep), Err(CalcError::TooDeep));
        let unary = "-".repeat(200) + "1";
        assert_eq!(evaluate(&unary), Err(CalcError::TooDeep));
        let nested_calls = "sin(".repeat(80) + "1" + &")".repeat(80);
        assert_eq!(evaluate(&nested_calls), Err(CalcError::TooDeep));
    }
}
