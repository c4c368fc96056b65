"""Split a command line into words exactly as shlex.split does (SPEC §3: POSIX shell word
rules, as shlex implements them), without importing re: ham's resident size counts.
Whitespace separates words; '...' keeps everything; inside "..." a backslash escapes only
" and \\; outside quotes a backslash escapes the next character. No expansions, no comments.
QNX's quoting examples (`\\'path with space\\' arg1 "arg3 with space"`) split as QNX means.
"""

BLANKS = " \t\r\n"  # shlex's whitespace
DOUBLE_ESCAPES = '"\\'


def split(line: str) -> list[str]:
    words: list[str] = []
    word: list[str] = []
    in_word = False
    i, n = 0, len(line)
    while i < n:
        char = line[i]
        if char in BLANKS:
            if in_word:
                words.append("".join(word))
                word, in_word = [], False
            i += 1
        elif char == "'":
            end = line.find("'", i + 1)
            if end < 0:
                raise ValueError("no closing quotation")
            word.append(line[i + 1:end])
            in_word, i = True, end + 1
        elif char == '"':
            i += 1
            while True:
                if i >= n:
                    raise ValueError("no closing quotation")
                char = line[i]
                if char == '"':
                    break
                if char == "\\" and i + 1 < n and line[i + 1] in DOUBLE_ESCAPES:
                    word.append(line[i + 1])
                    i += 2
                    continue
                word.append(char)
                i += 1
            in_word, i = True, i + 1
        elif char == "\\":
            if i + 1 >= n:
                raise ValueError("no escaped character")
            word.append(line[i + 1])
            in_word, i = True, i + 2
        else:
            word.append(char)
            in_word, i = True, i + 1
    if in_word:
        words.append("".join(word))
    return words
