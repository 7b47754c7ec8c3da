//! A little real code for rustc to chew on: generics, traits, iterators, formatting.

use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Num(f64),
    Op(char),
    Open,
    Close,
}

fn lex(input: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = input.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_ascii_digit() || c == '.' {
            let mut s = String::new();
            while let Some(&d) = chars.peek() {
                if d.is_ascii_digit() || d == '.' {
                    s.push(d);
                    chars.next();
                } else {
                    break;
                }
            }
            tokens.push(Token::Num(s.parse().unwrap_or(0.0)));
        } else {
            chars.next();
            match c {
                '(' => tokens.push(Token::Open),
                ')' => tokens.push(Token::Close),
                '+' | '-' | '*' | '/' => tokens.push(Token::Op(c)),
                _ => {}
            }
        }
    }
    tokens
}

fn precedence(op: char) -> u8 {
    match op {
        '*' | '/' => 2,
        _ => 1,
    }
}

/// Shunting-yard to reverse Polish notation, then evaluation.
fn eval(tokens: &[Token]) -> Option<f64> {
    let mut out = Vec::new();
    let mut ops: Vec<Token> = Vec::new();
    for t in tokens {
        match t {
            Token::Num(_) => out.push(t.clone()),
            Token::Op(o) => {
                while let Some(Token::Op(top)) = ops.last() {
                    if precedence(*top) >= precedence(*o) {
                        out.push(ops.pop()?);
                    } else {
                        break;
                    }
                }
                ops.push(t.clone());
            }
            Token::Open => ops.push(Token::Open),
            Token::Close => {
                while let Some(top) = ops.pop() {
                    if top == Token::Open {
                        break;
                    }
                    out.push(top);
                }
            }
        }
    }
    while let Some(top) = ops.pop() {
        out.push(top);
    }
    let mut stack = Vec::new();
    for t in out {
        match t {
            Token::Num(n) => stack.push(n),
            Token::Op(o) => {
                let b = stack.pop()?;
                let a = stack.pop()?;
                stack.push(match o {
                    '+' => a + b,
                    '-' => a - b,
                    '*' => a * b,
                    _ => a / b,
                });
            }
            _ => return None,
        }
    }
    stack.pop()
}

struct Histogram<K: Ord>(BTreeMap<K, usize>);

impl<K: Ord + fmt::Display> fmt::Display for Histogram<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, n) in &self.0 {
            writeln!(f, "{k:>8} {}", "#".repeat(*n))?;
        }
        Ok(())
    }
}

fn histogram<K: Ord, I: IntoIterator<Item = K>>(items: I) -> Histogram<K> {
    let mut map = BTreeMap::new();
    for k in items {
        *map.entry(k).or_insert(0) += 1;
    }
    Histogram(map)
}

fn main() {
    let exprs = ["1 + 2 * 3", "(1 + 2) * 3", "10 / 4 - 1", "2 * (3 + 4) * 5"];
    for e in exprs {
        println!("{e} = {:?}", eval(&lex(e)));
    }
    let words = "the quick brown fox jumps over the lazy dog the end";
    print!("{}", histogram(words.split_whitespace().map(str::len)));
}
