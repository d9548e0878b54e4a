// The therapist's reader: make an age key and open age-encrypted summaries, in the browser only.
// Nothing leaves the page: no request is made (the page's Content-Security-Policy forbids
// them), nothing is stored. Words come from the JSON block #imrs-texts (content/<lang>/reader.yaml).
import { Decrypter, armor, generateX25519Identity, identityToRecipient } from "age-encryption";

const TEXTS = JSON.parse(document.getElementById("imrs-texts").textContent);
const AGE_HEADER = "age-encryption.org/v1\n";
const ARMOR_BEGIN = "-----BEGIN AGE ENCRYPTED FILE-----";
const $ = (id) => document.getElementById(id);

/** A text as HTML (content is trusted); {placeholders} filled with escaped values. */
function t(key, params = {}) {
  const template = TEXTS[key] ?? key;
  return template.replace(/\{([a-z_]+)\}/g, (whole, name) => (name in params ? escapeHtml(params[name]) : whole));
}

function escapeHtml(value) {
  return String(value).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function show(element, html) {
  element.innerHTML = html;
  element.hidden = false;
}

/** The bot's fingerprint (bot/crypto/age.py): SHA-256 of the lower-case recipient, first 8 bytes, 4 groups. */
async function fingerprint(recipient) {
  const canonical = new TextEncoder().encode(recipient.trim().toLowerCase());
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", canonical));
  const hex = Array.from(digest.slice(0, 8), (b) => b.toString(16).padStart(2, "0")).join("").toUpperCase();
  return hex.match(/.{4}/g).join(" ");
}

class ReadError extends Error {
  constructor(reason, params = {}) {
    super(reason);
    this.reason = reason;
    this.params = params;
  }
}

// -- create my key -----------------------------------------------------------------------------

let keyFile = null; // { name, text } of the key made on this page, to save it again

function saveFile(name, text) {
  const url = URL.createObjectURL(new Blob([text], { type: "text/plain" }));
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

async function createKey() {
  const identity = await generateX25519Identity();
  const recipient = await identityToRecipient(identity);
  const created = new Date().toISOString().replace(/\.\d+Z$/, "Z");
  const text = `# created: ${created}\n# public key: ${recipient}\n${identity}\n`;
  keyFile = { name: `imrs-key-${created.slice(0, 10)}.txt`, text };
  saveFile(keyFile.name, keyFile.text);
  show($("created-saved"), t("create.saved", { file: keyFile.name }));
  $("recipient").textContent = recipient;
  $("fingerprint").textContent = await fingerprint(recipient);
  $("setkey-command").textContent = `/setkey ${recipient}`;
  $("copied").hidden = true;
  $("created").hidden = false;
}

// -- read a summary ----------------------------------------------------------------------------

const chosen = { summary: null, key: null }; // { name, bytes } each

/** The secret keys in an identity file (age-keygen's format) or a pasted line. */
async function parseIdentities(text) {
  const keys = [];
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const key = line.toUpperCase();
    if (!key.startsWith("AGE-SECRET-KEY-1")) throw new ReadError("identity");
    try {
      keys.push({ key, recipient: await identityToRecipient(key) });
    } catch {
      throw new ReadError("identity");
    }
  }
  if (!keys.length) throw new ReadError("identity");
  return keys;
}

function looksLikeAge(bytes) {
  const start = new TextDecoder("latin1").decode(bytes.slice(0, 64));
  return start.startsWith(AGE_HEADER) || start.trimStart().startsWith(ARMOR_BEGIN);
}

async function decryptSummary(bytes, keys) {
  if (!looksLikeAge(bytes)) throw new ReadError("not_age");
  let data = bytes;
  const decrypter = new Decrypter();
  for (const { key } of keys) decrypter.addIdentity(key);
  try {
    if (!new TextDecoder("latin1").decode(bytes.slice(0, 64)).startsWith(AGE_HEADER)) {
      data = armor.decode(new TextDecoder().decode(bytes));
    }
    return await decrypter.decrypt(data, "text");
  } catch (error) {
    if (/no identity matched/.test(String(error && error.message))) {
      const prints = await Promise.all(keys.map(({ recipient }) => fingerprint(recipient)));
      throw new ReadError("not_for_you", { fingerprint: prints.join(", ") });
    }
    throw new ReadError("damaged");
  }
}

async function openSummary() {
  const error = $("read-error");
  error.hidden = true;
  closeReport();
  try {
    if (!chosen.summary) throw new ReadError("no_summary");
    const pasted = $("key-text").value;
    const keyText = [chosen.key ? new TextDecoder().decode(chosen.key.bytes) : "", pasted].join("\n");
    if (!keyText.trim()) throw new ReadError("no_key");
    const keys = await parseIdentities(keyText);
    const page = await decryptSummary(chosen.summary.bytes, keys);
    const box = $("report-box");
    $("report").srcdoc = page;
    show($("report-note"), t("read.shown"));
    box.hidden = false;
  } catch (failure) {
    const reason = failure instanceof ReadError ? failure.reason : "damaged";
    show(error, t(`errors.${reason}`, failure.params || {}));
  }
}

function closeReport() {
  $("report").removeAttribute("srcdoc");
  $("report-box").hidden = true;
}

async function take(file, slot) {
  try {
    chosen[slot] = { name: file.name, bytes: new Uint8Array(await file.arrayBuffer()) };
    $(`${slot}-name`).textContent = file.name;
  } catch {
    chosen[slot] = null;
    show($("read-error"), t("errors.unreadable"));
  }
}

/** Dropped files: an age file is the summary, anything holding a secret key is the key file. */
async function dropped(files) {
  for (const file of files) {
    const head = new Uint8Array(await file.slice(0, 4096).arrayBuffer());
    const isKey = /AGE-SECRET-KEY-/i.test(new TextDecoder("latin1").decode(head)) && !looksLikeAge(head);
    await take(file, isKey ? "key" : "summary");
  }
}

// -- wiring ------------------------------------------------------------------------------------

function start() {
  for (const element of document.querySelectorAll("[data-t]")) element.innerHTML = t(element.dataset.t);
  if (!(window.crypto && crypto.subtle && window.TextDecoder)) {
    show($("browser-error"), t("errors.browser"));
    return;
  }
  $("create-button").addEventListener("click", () => createKey().catch(() => show($("browser-error"), t("errors.browser"))));
  $("save-again").addEventListener("click", () => keyFile && saveFile(keyFile.name, keyFile.text));
  $("copy-command").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText($("setkey-command").textContent);
      $("copied").hidden = false;
    } catch {
      window.getSelection().selectAllChildren($("setkey-command"));
    }
  });
  $("summary-file").addEventListener("change", (e) => e.target.files[0] && take(e.target.files[0], "summary"));
  $("key-file").addEventListener("change", (e) => e.target.files[0] && take(e.target.files[0], "key"));
  $("open-button").addEventListener("click", openSummary);
  $("close-button").addEventListener("click", closeReport);
  const drop = $("drop");
  // A file dropped anywhere else must not make the browser open it in place of this page.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
  drop.addEventListener("dragover", () => drop.classList.add("over"));
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    drop.classList.remove("over");
    dropped(Array.from(e.dataTransfer.files));
  });
}

start();
