package mqtt

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// maxTopicLen is MQTT's limit on a topic name or filter (a UTF-8 string).
const maxTopicLen = 65535

// ValidTopicName checks a PUBLISH topic name: not empty, no wildcards, no
// NUL, valid UTF-8, at most 65535 bytes.
func ValidTopicName(t string) error {
	switch {
	case t == "":
		return fmt.Errorf("empty topic name")
	case len(t) > maxTopicLen:
		return fmt.Errorf("topic name longer than %d bytes", maxTopicLen)
	case !utf8.ValidString(t):
		return fmt.Errorf("topic name is not valid UTF-8")
	case strings.ContainsAny(t, "+#\x00"):
		return fmt.Errorf("topic name %q contains a wildcard or NUL", t)
	}
	return nil
}

// ValidFilter checks a topic filter: '+' fills a whole level, '#' fills
// the last level only.
func ValidFilter(f string) error {
	switch {
	case f == "":
		return fmt.Errorf("empty topic filter")
	case len(f) > maxTopicLen:
		return fmt.Errorf("topic filter longer than %d bytes", maxTopicLen)
	case !utf8.ValidString(f):
		return fmt.Errorf("topic filter is not valid UTF-8")
	case strings.ContainsRune(f, 0):
		return fmt.Errorf("topic filter contains NUL")
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		if strings.ContainsAny(l, "+#") && len(l) > 1 {
			return fmt.Errorf("topic filter %q: a wildcard must fill its whole level", f)
		}
		if l == "#" && i != len(levels)-1 {
			return fmt.Errorf("topic filter %q: '#' must be the last level", f)
		}
	}
	return nil
}

// Match reports whether topic matches filter and returns what each wildcard
// matched, in order ('#' matches the rest of the topic as one string,
// possibly empty). Filters starting with a wildcard do not match topics
// starting with '$' (MQTT-4.7.2-1).
func Match(filter, topic string) ([]string, bool) {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return nil, false
	}
	var caps []string
	for {
		fl, frest, fmore := strings.Cut(filter, "/")
		if fl == "#" {
			return append(caps, topic), true
		}
		tl, trest, tmore := strings.Cut(topic, "/")
		switch {
		case fl == "+":
			caps = append(caps, tl)
		case fl != tl:
			return nil, false
		}
		if !fmore || !tmore {
			if fmore && !tmore && frest == "#" { // "a/#" matches "a"
				return append(caps, ""), true
			}
			return caps, fmore == tmore
		}
		filter, topic = frest, trest
	}
}

// wildcards counts the wildcard levels of a valid filter.
func wildcards(filter string) int {
	n := 0
	for _, l := range strings.Split(filter, "/") {
		if l == "+" || l == "#" {
			n++
		}
	}
	return n
}

// template is a parsed topic template: literal text, {N} (the N-th wildcard
// capture, from 1) and {topic} (the whole MQTT topic).
type template []tmplPart

type tmplPart struct {
	lit string
	ref int // 0 = literal, -1 = whole topic, N = capture N
}

func parseTemplate(s string, captures int) (template, error) {
	var t template
	for s != "" {
		i := strings.IndexAny(s, "{}")
		if i < 0 {
			t = append(t, tmplPart{lit: s})
			break
		}
		if s[i] == '}' {
			return nil, fmt.Errorf("unmatched '}'")
		}
		if i > 0 {
			t = append(t, tmplPart{lit: s[:i]})
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			return nil, fmt.Errorf("unclosed '{'")
		}
		name := s[i+1 : i+j]
		switch n, err := strconv.Atoi(name); {
		case name == "topic":
			t = append(t, tmplPart{ref: -1})
		case err == nil && n >= 1 && n <= captures:
			t = append(t, tmplPart{ref: n})
		case err == nil:
			return nil, fmt.Errorf("{%s}: the filter has %d wildcard(s)", name, captures)
		default:
			return nil, fmt.Errorf("{%s}: want {topic} or {1}..{%d}", name, captures)
		}
		s = s[i+j+1:]
	}
	return t, nil
}

func (t template) expand(topic string, caps []string) string {
	var b strings.Builder
	for _, p := range t {
		switch {
		case p.ref == -1:
			b.WriteString(topic)
		case p.ref > 0 && p.ref <= len(caps):
			b.WriteString(caps[p.ref-1])
		default:
			b.WriteString(p.lit)
		}
	}
	return b.String()
}

// firstLevel is the topic's first level: the default route key.
func firstLevel(topic string) string {
	l, _, _ := strings.Cut(topic, "/")
	return l
}
