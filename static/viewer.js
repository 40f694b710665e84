// Full-screen viewer: shows the picture of one card without a second
// connection: the card's WebRTC MediaStream in a <video> of its own, or the
// card's SSE frames in an <img>. Closes with the close button, Escape, or a
// click on the backdrop.

import { h, setText } from './dom.js';

export class Viewer {
  #ui = {};
  #unsubscribe = null;
  #card = null;
  #returnFocus = null;

  constructor(parent = document.body) {
    this.#build();
    parent.append(this.#ui.root);
    document.addEventListener('keydown', (ev) => {
      if (ev.key === 'Escape' && this.isOpen) {
        ev.preventDefault();
        this.close();
      }
    });
  }

  get isOpen() {
    return this.#card !== null;
  }

  /** Open for a StreamCard (anything with addViewListener()). */
  open(card) {
    if (this.#card === card) return;
    if (!this.isOpen) this.#returnFocus = document.activeElement;
    this.#detach();
    this.#card = card;
    this.#ui.root.hidden = false;
    document.body.classList.add('viewer-open');
    this.#unsubscribe = card.addViewListener((snap) => this.#render(snap));
    this.#ui.close.focus();
  }

  close() {
    if (!this.isOpen) return;
    this.#detach();
    this.#ui.root.hidden = true;
    this.#ui.img.removeAttribute('src');
    this.#ui.video.srcObject = null;
    document.body.classList.remove('viewer-open');
    const target = this.#returnFocus;
    this.#returnFocus = null;
    if (target && typeof target.focus === 'function' && target.isConnected) target.focus();
  }

  #detach() {
    this.#unsubscribe?.();
    this.#unsubscribe = null;
    this.#card = null;
  }

  #build() {
    const ui = this.#ui;
    ui.title = h('h2', { class: 'viewer-title', id: 'viewer-title' });
    ui.hud = h('span', { class: 'viewer-hud' });
    ui.close = h('button', {
      type: 'button', class: 'btn viewer-close', 'aria-label': 'Close full-screen view',
      text: '✕', onclick: () => this.close(),
    });
    ui.img = h('img', { class: 'viewer-img', alt: '', draggable: 'false' });
    ui.video = h('video', { class: 'viewer-img viewer-video', muted: true, autoplay: true,
      playsinline: true, hidden: true });
    ui.video.muted = true;
    ui.message = h('div', { class: 'viewer-message', hidden: true });
    ui.stage = h('div', {
      class: 'viewer-stage',
      onclick: (ev) => {
        if (ev.target === ui.stage) this.close();
      },
    }, ui.video, ui.img, ui.message);
    ui.root = h('div', {
      class: 'viewer', role: 'dialog', 'aria-modal': 'true',
      'aria-labelledby': 'viewer-title', hidden: true,
    },
    h('div', { class: 'viewer-bar' }, ui.title, ui.hud, ui.close),
    ui.stage);
  }

  #render(snap) {
    if (snap === null) {
      this.close(); // the card went away
      return;
    }
    const ui = this.#ui;
    setText(ui.title, snap.name === snap.id ? snap.id : `${snap.name} (${snap.id})`);
    setText(ui.hud, snap.hud);
    this.#renderVideo(snap.stream);
    if (snap.url) {
      if (ui.img.getAttribute('src') !== snap.url) ui.img.src = snap.url;
    } else if (snap.message || snap.stream) {
      ui.img.removeAttribute('src');
    }
    ui.img.hidden = !ui.img.getAttribute('src');
    ui.message.hidden = !snap.message;
    setText(ui.message, snap.message);
  }

  #renderVideo(stream) {
    const video = this.#ui.video;
    if (video.srcObject !== stream) {
      video.srcObject = stream;
      if (stream) video.play().catch(() => {});
    }
    video.hidden = !stream;
  }
}
