using System.Globalization;
using System.Text;

namespace AttributionFleet.Cli;

/// <summary>
/// Text from users and models shown on a terminal: control characters (C0, DEL, C1: ESC, OSC, BEL, CR …) and the
/// bidirectional overrides are written as visible escapes (<c>\x1b</c>, <c>\u202e</c>), so a text cannot move the
/// cursor, retitle the window or hide what follows (terminal escape injection). JSON output is not passed through here.
/// </summary>
public static class Terminal
{
    public static string Escape(string text)
    {
        StringBuilder? sb = null;
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            string? escaped = c switch
            {
                '\t' => "\\t",
                '\n' => "\\n",
                '\r' => "\\r",
                _ when c < 0x20 || c == 0x7F || c is >= '\u0080' and <= '\u009F' => $"\\x{(int)c:x2}",
                _ when c is >= '\u202A' and <= '\u202E' or >= '\u2066' and <= '\u2069' => $"\\u{(int)c:x4}",
                _ => null,
            };
            if (escaped is null)
            {
                sb?.Append(c);
                continue;
            }
            sb ??= new StringBuilder(text, 0, i, text.Length + 8);
            sb.Append(escaped);
        }
        return sb?.ToString() ?? text;
    }

    /// <summary>Escapes, formatted with the invariant culture (for interpolated lines).</summary>
    public static string E(object? value) => Escape(Convert.ToString(value, CultureInfo.InvariantCulture) ?? "");
}
