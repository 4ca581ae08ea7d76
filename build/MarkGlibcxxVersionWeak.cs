using System;
using System.IO;
using System.Text;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;

/// <summary>
/// Sets VER_FLG_WEAK (0x2) on the Vernaux entry named <see cref="VersionName"/> in the
/// .gnu.version_r section of every libLibTorchSharp.so under <see cref="Directories"/>,
/// but only when the host's libstdc++ does not define that version (otherwise nothing to fix).
/// ELF64 little-endian layout: Elf64_Verneed {u16 vn_version, u16 vn_cnt, u32 vn_file, u32 vn_aux, u32 vn_next},
/// Elf64_Vernaux {u32 vna_hash, u16 vna_flags, u16 vna_other, u32 vna_name, u32 vna_next}.
/// </summary>
public class MarkGlibcxxVersionWeak : Task
{
    [Required] public string[] Directories { get; set; } = Array.Empty<string>();
    [Required] public string VersionName { get; set; } = "";

    private const uint ShtGnuVerneed = 0x6ffffffe;
    private const ushort VerFlgWeak = 0x2;

    public override bool Execute()
    {
        if (HostHasVersion()) return true;
        foreach (var dir in Directories)
        {
            if (!Directory.Exists(dir)) continue;
            foreach (var file in Directory.EnumerateFiles(dir, "libLibTorchSharp.so", SearchOption.AllDirectories))
            {
                try
                {
                    if (Patch(file)) Log.LogMessage(MessageImportance.High, $"Marked {VersionName} weak in {file}");
                }
                catch (Exception e)
                {
                    Log.LogWarning($"Could not patch {file}: {e.Message}");
                }
            }
        }
        return !Log.HasLoggedErrors;
    }

    private bool HostHasVersion()
    {
        string[] candidates = {
            "/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "/usr/lib/aarch64-linux-gnu/libstdc++.so.6",
            "/usr/lib64/libstdc++.so.6", "/usr/lib/libstdc++.so.6" };
        foreach (var path in candidates)
        {
            if (!File.Exists(path)) continue;
            var bytes = File.ReadAllBytes(path);
            return IndexOf(bytes, Encoding.ASCII.GetBytes(VersionName + "\0")) >= 0;
        }
        return true; // no libstdc++ found where expected: leave the file alone
    }

    private bool Patch(string file)
    {
        var data = File.ReadAllBytes(file);
        if (data.Length < 64 || data[0] != 0x7f || data[1] != (byte)'E' || data[4] != 2 || data[5] != 1)
            return false; // not ELF64 little-endian
        ulong shoff = BitConverter.ToUInt64(data, 0x28);
        int shentsize = BitConverter.ToUInt16(data, 0x3A);
        int shnum = BitConverter.ToUInt16(data, 0x3C);
        bool changed = false;
        for (int i = 0; i < shnum; i++)
        {
            int sh = checked((int)shoff + i * shentsize);
            if (BitConverter.ToUInt32(data, sh + 4) != ShtGnuVerneed) continue;
            int secOff = checked((int)BitConverter.ToUInt64(data, sh + 0x18));
            int link = (int)BitConverter.ToUInt32(data, sh + 0x28);
            int strSh = checked((int)shoff + link * shentsize);
            int strOff = checked((int)BitConverter.ToUInt64(data, strSh + 0x18));
            int need = secOff;
            while (true)
            {
                int cnt = BitConverter.ToUInt16(data, need + 2);
                int aux = need + (int)BitConverter.ToUInt32(data, need + 8);
                for (int a = 0; a < cnt; a++)
                {
                    int name = strOff + (int)BitConverter.ToUInt32(data, aux + 8);
                    if (ReadCString(data, name) == VersionName)
                    {
                        ushort flags = BitConverter.ToUInt16(data, aux + 4);
                        if ((flags & VerFlgWeak) == 0)
                        {
                            BitConverter.GetBytes((ushort)(flags | VerFlgWeak)).CopyTo(data, aux + 4);
                            changed = true;
                        }
                    }
                    uint nextAux = BitConverter.ToUInt32(data, aux + 12);
                    if (nextAux == 0) break;
                    aux += (int)nextAux;
                }
                uint next = BitConverter.ToUInt32(data, need + 12);
                if (next == 0) break;
                need += (int)next;
            }
        }
        if (changed)
        {
            // Write a new file and move it over: the old inode may be hard-linked to the NuGet cache.
            var tmp = file + ".patching";
            File.WriteAllBytes(tmp, data);
            File.Delete(file);
            File.Move(tmp, file);
        }
        return changed;
    }

    private static string ReadCString(byte[] data, int offset)
    {
        int end = offset;
        while (end < data.Length && data[end] != 0) end++;
        return Encoding.ASCII.GetString(data, offset, end - offset);
    }

    private static int IndexOf(byte[] haystack, byte[] needle)
    {
        for (int i = 0; i <= haystack.Length - needle.Length; i++)
        {
            int j = 0;
            while (j < needle.Length && haystack[i + j] == needle[j]) j++;
            if (j == needle.Length) return i;
        }
        return -1;
    }
}
